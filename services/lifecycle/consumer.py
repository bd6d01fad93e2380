"""The lifecycle consumer and its workers, with or without the HTTP API; without it:
`touchline consume lifecycle` or `python -m services.lifecycle.consumer`."""

import sys

from services.lifecycle.handlers import build_engine
from services.lifecycle.workers import WORKERS
from shared.consumer_loop import Handler
from shared.service import ConsumerSpec, run_consumer
from shared.settings import Settings


def handler(settings: Settings) -> Handler:
    return build_engine(settings).apply


CONSUMER = ConsumerSpec("lifecycle", handler=handler, workers=WORKERS)

if __name__ == "__main__":
    sys.exit(run_consumer(CONSUMER))
