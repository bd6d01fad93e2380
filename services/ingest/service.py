"""The ingest service's one declaration: its app (no consumer), its port and processes."""

from services.ingest.api import create_app
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "ingest",
    create_app=create_app,
    port_setting="ingest_port",
    worker_app="services.ingest.api:worker_app",
    processes_setting="ingest_workers",
    http_protocol="shared.http_limits:GuardedHttpToolsProtocol",
)
