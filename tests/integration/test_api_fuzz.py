"""schemathesis against each service's own OpenAPI schema, on the real broker and a migrated
database: for every operation, generated requests (valid ones, then invalid ones; a bounded
number of each) never get a 5xx, and every answer matches the schema (status code documented,
body and content type as declared)."""

from __future__ import annotations

import base64

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    CheckFunction,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
)

from tests.support.apps import api_client
from touchline.broker import EmbeddedBroker
from touchline.services import SERVICES

EXAMPLES = 20  # per operation and generation mode
# Every schemathesis check but these: "schema-valid data is accepted" (rules the schema cannot
# say, such as a call needing userId or anonymousId or a stage being in the stage model, answer
# 400), "generated credentials are refused" (every request here carries a valid token;
# test_access.py checks each route's tokens), and for ingest "invalid data is refused": a batch
# answers 200 with each bad event rejected by index, as Segment's API does.
EXCLUDED: dict[str, list[CheckFunction]] = {
    "ingest": [positive_data_acceptance, ignored_auth, negative_data_rejection],
    "lifecycle": [positive_data_acceptance, ignored_auth],
    "scoring": [positive_data_acceptance, ignored_auth],
}
CREDENTIALS = {
    "ingest": "Basic " + base64.b64encode(b"test-key:").decode(),
    "lifecycle": "Bearer test-admin",  # the admin token opens every route
    "scoring": "Bearer test-admin",
}


def exercise(client: TestClient, case: Case, excluded: list[CheckFunction]) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)  # no route reads cookies
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")  # raw bodies (text/plain beacons)
    response = client.request(**kwargs)
    case.validate_response(response, excluded_checks=excluded)


# The services' background threads (readiness checks, erasure readers) draw from the global
# `random` through kafka-python while hypothesis draws a case, which it takes for a strategy
# using `random`; no strategy here does.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_generated_requests_get_no_5xx_and_answers_match_the_schema(
    service: str, broker: EmbeddedBroker, sqlite_url: str
) -> None:
    with api_client(service, broker.bootstrap, sqlite_url) as (app, client):
        schema = schemathesis.openapi.from_dict(app.openapi())
        operations = [
            result.ok()
            for result in schema.get_all_operations()
            # The dashboard's proxy to scoring answers 502 by design here (no scoring server
            # runs); test_conversion.py tests that, the dashboard e2e test the happy path.
            if result.ok().path != "/v1/scoring/{path}"
        ]
        assert len(operations) >= 3
        auth = {"Authorization": CREDENTIALS[service]}  # a fixed header: never generated
        for operation in operations:
            for mode in GenerationMode:

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
                def check(case: Case) -> None:
                    exercise(client, case, EXCLUDED[service])

                try:
                    check()
                except Unsatisfiable:
                    # Nothing to make invalid (no parameters, no body): positive cases only.
                    assert mode is GenerationMode.NEGATIVE, operation.label
