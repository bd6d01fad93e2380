"""The lifecycle service's one declaration: its app, its consumer and workers, its port."""

from services.lifecycle.api import create_app
from services.lifecycle.consumer import CONSUMER
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "lifecycle", create_app=create_app, port_setting="lifecycle_port", consumer=CONSUMER
)
