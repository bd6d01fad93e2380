"""The scoring service's one declaration: its app, its consumer and workers, its port."""

from services.scoring.api import create_app
from services.scoring.consumer import CONSUMER
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "scoring", create_app=create_app, port_setting="scoring_port", consumer=CONSUMER
)
