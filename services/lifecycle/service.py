"""The lifecycle service's one declaration: its app, its consumer and workers, its port, its
settings section and its metrics."""

from services.lifecycle import metrics
from services.lifecycle.api import create_app
from services.lifecycle.consumer import CONSUMER
from shared.service import ServiceSpec

SERVICE = ServiceSpec(
    "lifecycle",
    create_app=create_app,
    port_setting="lifecycle_port",
    settings=(
        "lifecycle_port",
        "stage_model",
        "attribution_lookback_days",
        "touch_path_limit",
        "scoring_url",
    ),
    metrics=metrics.OWN,
    consumer=CONSUMER,
)
