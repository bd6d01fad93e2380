"""The scoring service's one declaration: its app, its consumer and workers, its port, its
settings section and its metrics."""

from services.scoring import metrics
from services.scoring.api import create_app
from services.scoring.consumer import CONSUMER
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "scoring",
    create_app=create_app,
    port_setting="scoring_port",
    settings=(
        "scoring_port",
        "refit_interval_s",
        "value_horizon_days",
        "clv_margin",
        "annual_discount_rate",
    ),
    metrics=metrics.OWN,
    consumer=CONSUMER,
)
