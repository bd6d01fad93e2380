# One image for the three Touchline services; the compose file picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
# Without the `embedded` extra: production talks to a real Kafka, never the dev broker.
RUN pip install --no-cache-dir -e . && useradd --create-home touchline
USER touchline
EXPOSE 8000 8001 8002
CMD ["touchline", "--help"]
