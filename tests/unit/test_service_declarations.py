"""One declaration per service, and the API and the consumer-only process read the same one."""

import pytest

from services.lifecycle import api as lifecycle_api
from services.scoring import api as scoring_api
from services.scoring.workers import scheduled_refit
from shared.settings import Settings
from touchline.services import CONSUMERS, SERVICES, declaration


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_declares_its_name_app_and_port(name: str) -> None:
    spec = declaration(name)
    assert spec.name == name
    assert spec.port_setting in Settings.model_fields
    assert spec.consumer is None or spec.consumer.name == name
    assert (spec.consumer is not None) == (name in CONSUMERS)


def test_the_apis_run_the_declared_workers() -> None:
    lifecycle, scoring = declaration("lifecycle").consumer, declaration("scoring").consumer
    assert lifecycle is not None and scoring is not None
    assert lifecycle_api.WORKERS is lifecycle.workers
    assert scoring_api.WORKERS is scoring.workers
    assert scheduled_refit in scoring.workers  # the consumer-only scoring process refits too
