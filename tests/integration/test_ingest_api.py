"""The ingest API over real HTTP requests against the real embedded broker: every rule, every
error code, and what lands on touchpoints.v1 and touchpoints.rejected.v1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from services.ingest.api import create_app
from shared.events import REJECTED, TOUCHPOINTS, RejectedEvent, Touchpoint, all_topics
from shared.kafka import ensure_topics
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support.pipeline import read_topic, ready, settings_env, settings_for, wait_for
from touchline.broker import EmbeddedBroker, free_port

AUTH = ("test-key", "")
TOUCHLINE = str(Path(sys.executable).parent / "touchline")


@pytest.fixture
def client(broker: EmbeddedBroker) -> Iterator[TestClient]:
    settings = settings_for(
        broker.bootstrap, "sqlite://", write_keys="test-key:web-site,app-key:ios-app"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def uid() -> str:
    return f"u-{uuid.uuid4().hex}"


def test_track_with_basic_auth_lands_keyed_by_customer_with_skew_correction(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    user = uid()
    response = client.post(
        "/v1/track",
        json={
            "userId": user,
            "event": "Signed Up",
            "timestamp": "2020-01-01T00:00:00Z",
            "sentAt": "2020-01-01T00:01:00Z",
            "context": {"campaign": {"medium": "email"}},
        },
        auth=AUTH,
    )
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 1, "rejected": []}
    (record,) = read_topic(broker.bootstrap, TOUCHPOINTS, user, 1)
    event = Touchpoint.model_validate_json(record.value)
    assert record.key == user.encode()
    assert (event.channel, event.source, event.event) == ("email", "web-site", "Signed Up")
    skew = event.received_at - event.timestamp
    assert 59 <= skew.total_seconds() <= 61  # the event happened one minute before it was sent


def test_write_key_in_body_and_text_plain_beacons(client: TestClient) -> None:
    body = {"writeKey": "test-key", "anonymousId": uid(), "name": "Home"}
    response = client.post(
        "/v1/page", content=orjson.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("auth", [None, ("wrong-key", ""), ("", "")])
def test_missing_or_unknown_write_key_is_401(client: TestClient, auth: Any) -> None:
    response = client.post("/v1/track", json={"userId": uid(), "event": "E"}, auth=auth)
    assert response.status_code == 401
    assert "write key" in response.json()["detail"]


def test_malformed_json_and_non_object_bodies_are_400(client: TestClient) -> None:
    for body in (b"{not json", b"[1, 2]"):
        response = client.post("/v1/track", content=body, auth=AUTH)
        assert response.status_code == 400
        assert "JSON" in response.json()["detail"]


def test_request_over_500_kb_is_413_before_parsing(client: TestClient) -> None:
    big = b'{"batch": [' + b" " * (500 * 1024) + b"]}"
    response = client.post("/v1/batch", content=big, auth=AUTH)
    assert response.status_code == 413
    assert "500 KB" in response.json()["detail"]


def test_event_over_32_kb(client: TestClient, broker: EmbeddedBroker) -> None:
    user = uid()
    huge = {"userId": user, "event": "E", "properties": {"blob": "x" * (33 * 1024)}}
    single = client.post("/v1/track", json=huge, auth=AUTH)
    assert single.status_code == 413
    assert "32 KB" in single.json()["detail"]
    batch = client.post(
        "/v1/batch",
        json={"batch": [{**huge, "type": "track"}, {"type": "page", "userId": user}]},
        auth=AUTH,
    )
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 1
    assert batch.json()["rejected"][0]["index"] == 0
    assert "32 KB" in batch.json()["rejected"][0]["reason"]


def test_batch_over_2500_events_is_400(client: TestClient) -> None:
    events = [{"type": "page", "userId": "u"}] * 2501
    response = client.post("/v1/batch", json={"batch": events}, auth=AUTH)
    assert response.status_code == 400
    assert "2500" in response.json()["detail"]


def test_batch_reports_each_rejection_and_sends_it_to_the_rejected_topic(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    user = uid()
    batch = [
        {"type": "track", "userId": user, "event": "Signed Up", "messageId": f"{user}-ok"},
        {"type": "track", "userId": "undefined", "event": "E", "messageId": f"{user}-junk"},
        {"type": "track", "userId": user, "messageId": f"{user}-noevent"},
        {"type": "identify", "messageId": f"{user}-noid", "traits": {"plan": "pro"}},
        {"type": "screen", "anonymousId": user, "name": "Home"},
    ]
    response = client.post(
        "/v1/batch", json={"batch": batch, "sentAt": "2026-01-01T00:00:00Z"}, auth=AUTH
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["messageId"]) for r in body["rejected"]] == [
        (1, f"{user}-junk"),
        (2, f"{user}-noevent"),
        (3, f"{user}-noid"),
    ]
    rows = [
        RejectedEvent.model_validate_json(r.value)
        for r in read_topic(broker.bootstrap, REJECTED, user, 3)
    ]
    by_id = {row.message_id: row for row in rows}
    assert "not a real id" in by_id[f"{user}-junk"].reason
    assert by_id[f"{user}-noevent"].raw == batch[2]
    assert by_id[f"{user}-noid"].reason == "userId or anonymousId is required"
    assert {row.source for row in rows} == {"web-site"}
    accepted = read_topic(broker.bootstrap, TOUCHPOINTS, user, 2)
    assert sorted(Touchpoint.model_validate_json(r.value).channel for r in accepted) == [
        "mobile",
        "other",
    ]


def test_single_invalid_event_is_400_and_recorded_as_rejected(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    user = uid()
    response = client.post(
        "/v1/alias", json={"userId": user, "messageId": f"{user}-alias"}, auth=AUTH
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "alias calls need a previousId"
    (record,) = read_topic(broker.bootstrap, REJECTED, user, 1)
    assert RejectedEvent.model_validate_json(record.value).reason == "alias calls need a previousId"


def test_message_id_assigned_when_missing(client: TestClient, broker: EmbeddedBroker) -> None:
    user = uid()
    assert (
        client.post(
            "/v1/identify", json={"userId": user, "traits": {"plan": "pro"}}, auth=AUTH
        ).status_code
        == 200
    )
    (record,) = read_topic(broker.bootstrap, TOUCHPOINTS, user, 1)
    event = Touchpoint.model_validate_json(record.value)
    assert uuid.UUID(event.message_id)
    assert event.traits == {"plan": "pro"}


def test_import_keeps_historical_timestamps(client: TestClient, broker: EmbeddedBroker) -> None:
    user = uid()
    batch = [
        {
            "type": "track",
            "userId": user,
            "event": "Order Completed",
            "timestamp": "1997-01-01T00:00:00Z",
            "properties": {"order_id": "o1", "revenue": 29.33},
        }
    ]
    response = client.post(
        "/v1/import", json={"batch": batch, "sentAt": "2026-01-01T00:00:00Z"}, auth=AUTH
    )
    assert response.status_code == 200
    (record,) = read_topic(broker.bootstrap, TOUCHPOINTS, user, 1)
    event = Touchpoint.model_validate_json(record.value)
    assert event.timestamp.isoformat() == "1997-01-01T00:00:00+00:00"
    assert event.revenue == 29.33


def test_channel_rules_end_to_end(client: TestClient, broker: EmbeddedBroker) -> None:
    user = uid()
    cases = {
        "social": {"type": "page", "context": {"page": {"referrer": "https://www.facebook.com/"}}},
        "email": {"type": "track", "event": "Email Link Clicked"},
        "mobile": {
            "type": "track",
            "event": "Application Opened",
            "context": {"os": {"name": "iOS"}},
        },
        "web": {"type": "page", "name": "Home"},
        "other": {"type": "track", "event": "Lead Created"},
    }
    batch = [
        {**event, "userId": user, "messageId": f"{user}-{name}"} for name, event in cases.items()
    ]
    assert client.post("/v1/batch", json={"batch": batch}, auth=AUTH).json()["accepted"] == 5
    events = [
        Touchpoint.model_validate_json(r.value)
        for r in read_topic(broker.bootstrap, TOUCHPOINTS, user, 5)
    ]
    assert {e.message_id.rsplit("-", 1)[1]: e.channel for e in events} == {
        name: name for name in cases
    }


def test_one_customer_one_partition(client: TestClient, broker: EmbeddedBroker) -> None:
    user = uid()
    batch = [{"type": "track", "userId": user, "event": f"E{n}"} for n in range(20)]
    assert client.post("/v1/batch", json={"batch": batch}, auth=AUTH).status_code == 200
    records = read_topic(broker.bootstrap, TOUCHPOINTS, user, 20)
    assert len({r.partition for r in records}) == 1
    order = [
        Touchpoint.model_validate_json(r.value).event
        for r in sorted(records, key=lambda r: r.offset)
    ]
    assert order == [f"E{n}" for n in range(20)]


def test_rate_limit_is_429_with_retry_after(broker: EmbeddedBroker) -> None:
    settings = settings_for(broker.bootstrap, "sqlite://", rate_limit_per_s=1, rate_limit_burst=10)
    with TestClient(create_app(settings)) as limited:
        batch = [{"type": "page", "userId": uid()}] * 10
        assert limited.post("/v1/batch", json={"batch": batch}, auth=AUTH).status_code == 200
        response = limited.post("/v1/track", json={"userId": uid(), "event": "E"}, auth=AUTH)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1


def test_cors_preflight_allows_browser_beacons(client: TestClient) -> None:
    response = client.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://shop.example.com")


@pytest.mark.wall_clock
def test_broker_down_gives_bounded_503_then_recovers_without_restart(
    own_broker: EmbeddedBroker,
) -> None:
    settings = settings_for(own_broker.bootstrap, "sqlite://", produce_timeout_s=2.0)
    with TestClient(create_app(settings)) as c:
        assert (
            c.post("/v1/track", json={"userId": uid(), "event": "E"}, auth=AUTH).status_code == 200
        )
        assert c.get("/readyz").status_code == 200
        own_broker.stop()
        started = time.monotonic()
        response = c.post("/v1/track", json={"userId": uid(), "event": "E"}, auth=AUTH)
        assert response.status_code == 503
        assert time.monotonic() - started < settings.produce_timeout_s + 2
        assert int(response.headers["Retry-After"]) > 0
        assert c.get("/readyz").status_code == 503

        own_broker.start()
        # the memory-only broker came back without its topics
        ensure_topics(own_broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
        user = uid()
        wait_for(
            lambda: c.post("/v1/track", json={"userId": user, "event": "E"}, auth=AUTH).status_code,
            lambda status: status == 200,
            60,
            "ingest to recover",
        )
        assert c.get("/readyz").status_code == 200
        assert read_topic(own_broker.bootstrap, TOUCHPOINTS, user, 1)


def test_openapi_documents_the_tracking_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for route in ("track", "identify", "page", "screen", "group", "alias", "batch", "import"):
        operation = schema["paths"][f"/v1/{route}"]["post"]
        assert "application/json" in operation["requestBody"]["content"]
        assert {"200", "400", "401", "413", "429", "503"} <= set(operation["responses"])


def test_several_ingest_workers_share_one_port_and_stop_together(broker: EmbeddedBroker) -> None:
    port = free_port()
    env = {
        **os.environ,
        **settings_env(broker.bootstrap, "sqlite://"),
        "TOUCHLINE_INGEST_PORT": str(port),
        "TOUCHLINE_INGEST_WORKERS": "2",
    }
    server = subprocess.Popen([TOUCHLINE, "serve", "ingest"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), bool, 60, "two ingest workers to serve")
        run = uuid.uuid4().hex[:8]
        for n in range(20):  # a connection each: the kernel spreads them over the workers
            answer = httpx.post(
                f"{url}/v1/track",
                json={"userId": f"{run}-{n}", "event": "Product Viewed"},
                auth=AUTH,
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        assert len(read_topic(broker.bootstrap, TOUCHPOINTS, run, 20)) == 20
        # Whichever worker answers the scrape, it counts what every worker accepted.
        for _ in range(4):
            assert f'touchline_ingest_events_accepted_total{{channel="other"}} {20.0}' in (
                httpx.get(f"{url}/metrics", timeout=10).text
            )
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    assert not ready(url), "every worker stops with the server"
