"""The ingest service's one declaration: its app (no consumer), its port, processes and HTTP
protocol, its settings section and its metrics."""

from services.ingest import metrics
from services.ingest.api import create_app
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "ingest",
    create_app=create_app,
    port_setting="ingest_port",
    settings=(
        "ingest_port",
        "ingest_workers",
        "rate_limit_per_s",
        "rate_limit_burst",
        "cors_origins",
        "ingest_header_timeout_s",
        "ingest_body_timeout_s",
        "ingest_max_connections_per_client",
    ),
    metrics=metrics.OWN,
    worker_app="services.ingest.api:worker_app",
    processes_setting="ingest_workers",
    http_protocol="services.ingest.http_limits:GuardedHttpToolsProtocol",
)
