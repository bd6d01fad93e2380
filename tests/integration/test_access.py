"""Every route of the lifecycle and scoring services, from their OpenAPI schemas: the read APIs
answer 401 without a valid bearer token, admin routes 403 to a read token; only health, metrics,
the docs and the dashboard's page (no data, no token in it) are open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.lifecycle.api import create_app as lifecycle_app
from services.scoring.api import create_app as scoring_app
from shared.service_app import MAX_BODY_BYTES
from tests.support.apps import api_client
from tests.support.pipeline import settings_for
from touchline.broker import EmbeddedBroker, free_port

ADMIN_HEADERS = {"Authorization": "Bearer test-admin"}
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"}
ADMIN_ONLY = {
    "lifecycle": {
        ("POST", "/v1/customers/{customer_id}/reset"),
        ("DELETE", "/v1/customers/{customer_id}"),
    },
    "scoring": {("POST", "/v1/model/refit"), ("DELETE", "/v1/customers/{customer_id}")},
}


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route in the app's OpenAPI schema."""
    paths = app.openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations]


def call(client: TestClient, method: str, path: str, token: str | None) -> Any:
    url = path.replace("{customer_id}", "someone").replace("{path:path}", "segments")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, headers=headers)


@pytest.mark.parametrize("service", ["lifecycle", "scoring"])
def test_every_route_needs_the_right_token(
    service: str, broker: EmbeddedBroker, sqlite_url: str
) -> None:
    with api_client(service, broker.bootstrap, sqlite_url) as (app, client):
        all_routes = routes(app)
        protected = [
            (m, p) for m, p in all_routes if p not in OPEN and not p.startswith("/dashboard")
        ]
        assert len(protected) >= 5 and ADMIN_ONLY[service] <= set(protected)
        for method, path in protected:
            for token in (None, "wrong-token", "test-read-but-longer"):
                response = call(client, method, path, token)
                assert response.status_code == 401, (method, path, token, response.text)
                assert response.headers["WWW-Authenticate"] == "Bearer"
            as_reader = call(client, method, path, "test-read")
            if (method, path) in ADMIN_ONLY[service]:
                assert as_reader.status_code == 403, (method, path)
            else:
                assert as_reader.status_code not in (401, 403), (method, path)
        # The open routes really are open (and say nothing about customers).
        for path in ("/healthz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200
        if service == "lifecycle":
            page = client.get("/dashboard")
            assert page.status_code == 200 and "test-read" not in page.text


@pytest.mark.parametrize("service", ["lifecycle", "scoring"])
def test_request_bodies_are_capped_before_parsing(
    service: str, broker: EmbeddedBroker, sqlite_url: str
) -> None:
    path = {"lifecycle": "/v1/customers/x/reset", "scoring": "/v1/model/refit"}[service]
    big = b'{"note": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with api_client(service, broker.bootstrap, sqlite_url) as (_, client):
        # Declared too large: refused before any of it is read, token or not.
        declared = client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413
        # Sent in chunks without a length: refused once the bytes read pass the limit.
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        streamed = client.post(path, content=chunks, headers=ADMIN_HEADERS)
        assert streamed.status_code == 413
        # A body within the limit gets the route's own answer.
        small = {"lifecycle": {"stage": "visitor"}, "scoring": {}}[service]
        expected = {"lifecycle": 404, "scoring": 200}[service]  # unknown customer; a refit
        assert client.post(path, json=small, headers=ADMIN_HEADERS).status_code == expected


@pytest.mark.parametrize(
    ("create_app", "read"),
    [(lifecycle_app, "/v1/customers/someone"), (scoring_app, "/v1/customers/someone/scores")],
)
def test_reads_and_writes_answer_503_while_the_database_is_down(
    broker: EmbeddedBroker, create_app: Callable[[Any], FastAPI], read: str
) -> None:
    nowhere = f"postgresql://touchline@127.0.0.1:{free_port()}/touchline"  # nothing listens
    settings = settings_for(broker.bootstrap, nowhere, run_consumer=False, refit_interval_s=0)
    with TestClient(create_app(settings)) as client:
        for method, path, token in (
            ("GET", read, "test-read"),
            ("DELETE", "/v1/customers/someone", "test-admin"),
        ):
            answer = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json() == {"detail": "the database is unavailable or busy; retry"}
        assert client.get("/readyz").status_code == 503
