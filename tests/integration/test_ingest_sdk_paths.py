"""What the real SDKs send, as they send it, against the real broker: the one-letter paths, the
beacon route, the settings they fetch, gzip and deflate bodies (chunked too, over real HTTP),
RudderStack's fields, the error body they read, CORS, and the OpenAPI schema that documents it."""

from __future__ import annotations

import gzip
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.ingest.api import create_app
from shared.events import TOUCHPOINTS, Touchpoint
from tests.support.pipeline import read_topic, ready, settings_for, wait_for
from touchline.broker import EmbeddedBroker, free_port

AUTH = ("test-key", "")
KEYS = "test-key:web-site,app-key:ios-app"
SHORT = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}
ORIGIN = "https://shop.example.com"


@pytest.fixture
def client(broker: EmbeddedBroker) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(broker.bootstrap, "sqlite://", write_keys=KEYS))) as c:
        yield c


@pytest.fixture
def server(broker: EmbeddedBroker) -> Iterator[str]:
    """Ingest under uvicorn on a free port (real HTTP: chunked bodies, Host headers)."""
    port = free_port()
    app = create_app(settings_for(broker.bootstrap, "sqlite://", write_keys=KEYS))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), bool, 60, "ingest under uvicorn")
        yield url
    finally:
        running.should_exit = True
        thread.join(30)


def uid() -> str:
    return f"u-{uuid.uuid4().hex}"


def landed(broker: EmbeddedBroker, match: str, count: int = 1) -> list[Touchpoint]:
    records = read_topic(broker.bootstrap, TOUCHPOINTS, match, count)
    return [Touchpoint.model_validate_json(r.value) for r in records]


def call(kind: str, user: str) -> dict[str, Any]:
    """A call of `kind` for `user` with what that kind needs, and a campaign."""
    body: dict[str, Any] = {
        "userId": user,
        "context": {"campaign": {"medium": "email", "source": "newsletter"}},
    }
    extra = {
        "track": {"event": "Order Completed", "properties": {"revenue": 42.5}},
        "page": {"name": "Home"},
        "screen": {"name": "Cart"},
        "group": {"groupId": "acme"},
        "alias": {"previousId": f"{user}-before"},
        "identify": {"traits": {"plan": "pro"}},
    }[kind]
    return {**body, **extra}


def same(event: Touchpoint) -> tuple[Any, ...]:
    """What must not depend on the path the call came by."""
    return (event.type, event.event, event.channel, event.source, event.revenue, event.group_id)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body SDKs read: success false, a stable code, a sentence (and `detail`)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["message"], str) and len(body["message"]) > 5
    assert body["detail"] == body["message"]
    return body


def test_short_paths_land_exactly_like_the_long_ones(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    for letter, kind in SHORT.items():
        short_user, long_user = uid(), uid()
        short = client.post(f"/v1/{letter}", json=call(kind, short_user), auth=AUTH)
        long = client.post(f"/v1/{kind}", json=call(kind, long_user), auth=AUTH)
        assert short.json() == long.json() == {"success": True, "accepted": 1, "rejected": []}
        (by_short,) = landed(broker, short_user)
        (by_long,) = landed(broker, long_user)
        assert same(by_short) == same(by_long)
        assert by_short.type == kind
    run = uid()
    batch = [{**call(kind, f"{run}-{kind}"), "type": kind} for kind in SHORT.values()]
    response = client.post("/v1/b", json={"batch": batch}, auth=AUTH)
    assert response.json() == {"success": True, "accepted": len(SHORT), "rejected": []}
    assert sorted(e.type for e in landed(broker, run, len(SHORT))) == sorted(SHORT.values())


def test_short_path_as_analytics_next_sends_it(client: TestClient, broker: EmbeddedBroker) -> None:
    """text/plain, the write key in the body, no Authorization header."""
    user = uid()
    body = {**call("track", user), "writeKey": "test-key", "type": "track"}
    response = client.post(
        "/v1/t", content=orjson.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    (event,) = landed(broker, user)
    assert (event.event, event.revenue, event.source) == ("Order Completed", 42.5, "web-site")


def test_beacon_takes_the_write_key_from_the_query(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    user = uid()
    body = orjson.dumps({"batch": [{**call("page", user), "type": "page"}]})
    plain = {"Content-Type": "text/plain;charset=UTF-8"}
    response = client.post("/beacon/v1/batch?writeKey=app-key", content=body, headers=plain)
    assert response.json() == {"success": True, "accepted": 1, "rejected": []}
    (event,) = landed(broker, user)
    assert (event.type, event.source) == ("page", "ios-app")
    for query in ("", "?writeKey=wrong-key", "?writeKey="):
        refused = client.post(f"/beacon/v1/batch{query}", content=body, headers=plain)
        assert_error(refused, 401, "unauthorized")
    # Only the beacon reads the query: elsewhere the key is the Basic user name or the body's.
    assert_error(client.post("/v1/b?writeKey=test-key", content=body), 401, "unauthorized")


def test_settings_point_the_sdks_at_this_ingest(client: TestClient) -> None:
    for path in ("/v1/projects/test-key/settings", "/projects/test-key/settings"):
        response = client.get(path, headers={"Host": "touchline.example.com:8000"})
        assert response.status_code == 200, response.text
        settings = response.json()
        assert settings["integrations"]["Segment.io"] == {
            **settings["integrations"]["Segment.io"],
            "apiKey": "test-key",
            "apiHost": "touchline.example.com:8000/v1",
            "protocol": "http",
        }
        assert settings["plan"]["track"]["__default"]["enabled"] is True
        assert settings["remotePlugins"] == [] and settings["metrics"]["sampleRate"] == 0
        assert set(settings["integrations"]) == {"Segment.io"}  # no device-mode destinations
    behind_proxy = client.get(
        "/v1/projects/app-key/settings",
        headers={
            "Host": "10.0.0.5:8000",
            "X-Forwarded-Host": "collect.example.com, proxy.internal",
            "X-Forwarded-Proto": "https",
            "Origin": ORIGIN,
        },
    )
    segment_io = behind_proxy.json()["integrations"]["Segment.io"]
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("collect.example.com/v1", "https")
    assert behind_proxy.headers["access-control-allow-origin"] in ("*", ORIGIN)
    for path in ("/v1/projects/no-such-key/settings", "/projects/no-such-key/settings"):
        assert_error(client.get(path), 404, "not_found")


def test_settings_from_the_real_server_name_its_host(server: str) -> None:
    settings = httpx.get(f"{server}/v1/projects/test-key/settings", timeout=10).json()
    host = server.removeprefix("http://")
    assert settings["integrations"]["Segment.io"]["apiHost"] == f"{host}/v1"
    # The SDK then sends to <protocol>://<apiHost>/<letter>: that URL takes its events.
    segment_io = settings["integrations"]["Segment.io"]
    url = f"{segment_io['protocol']}://{segment_io['apiHost']}/p"
    body = {"anonymousId": uid(), "writeKey": segment_io["apiKey"], "type": "page"}
    assert httpx.post(url, content=orjson.dumps(body), timeout=10).json()["accepted"] == 1


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_bodies_land(
    client: TestClient, broker: EmbeddedBroker, encoding: str, pack: Any
) -> None:
    run = uid()
    batch = [{**call("track", f"{run}-{n}"), "type": "track"} for n in range(3)]
    body = pack(orjson.dumps({"batch": batch, "writeKey": "app-key"}))
    response = client.post(
        "/v1/b", content=body, headers={"Content-Encoding": encoding, "Content-Type": "text/plain"}
    )
    assert response.json() == {"success": True, "accepted": 3, "rejected": []}
    assert {e.source for e in landed(broker, run, 3)} == {"ios-app"}


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_gzip_body_without_content_length(server: str, broker: EmbeddedBroker) -> None:
    """analytics-kotlin streams its gzip body: chunked transfer encoding, no Content-Length."""
    run = uid()
    batch = [{**call("page", f"{run}-{n}"), "type": "page"} for n in range(40)]
    body = gzip.compress(orjson.dumps({"batch": batch, "writeKey": "test-key"}))
    seen: dict[str, str] = {}
    with httpx.Client(event_hooks={"request": [lambda r: seen.update(r.headers)]}) as http:
        response = http.post(
            f"{server}/v1/b",
            content=chunks(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
            timeout=30,
        )
    assert seen["transfer-encoding"] == "chunked" and "content-length" not in seen
    assert response.json() == {"success": True, "accepted": 40, "rejected": []}
    assert len(landed(broker, run, 40)) == 40
    # The limits hold for a chunked body too: 600 KB of JSON, compressed and streamed.
    big = gzip.compress(orjson.dumps({"batch": [{"pad": "x" * 1000}] * 600}))
    too_big = httpx.post(
        f"{server}/v1/b",
        content=chunks(big),
        headers={"Content-Encoding": "gzip"},
        auth=AUTH,
        timeout=30,
    )
    assert_error(too_big, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b'{"userId": "u", "event": "E"}'),  # not compressed at all
        ("gzip", gzip.compress(b'{"userId": "u", "event": "E"}')[:-6]),  # cut short
        ("gzip", gzip.compress(b'{"userId": "u", "event": "E"}')[:12] + b"\xff" * 30),
        ("gzip", gzip.compress(b'{"userId": "u", "event": "E"}') + b"junk"),
        ("gzip", b""),
        ("deflate", b"\x00\x01\x02 not deflate at all"),
    ],
    ids=["plain", "truncated", "corrupt", "trailing", "empty", "deflate"],
)
def test_corrupt_compressed_body_is_400_saying_so(
    client: TestClient, encoding: str, body: bytes
) -> None:
    response = client.post(
        "/v1/track", content=body, headers={"Content-Encoding": encoding}, auth=AUTH
    )
    error = assert_error(response, 400, "bad_compression")
    assert f"not valid {encoding}" in error["message"]


def test_gzip_bomb_is_413_at_the_limit_and_quickly(client: TestClient) -> None:
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024), 9)
    assert len(bomb) < 20 * 1024  # 10 MB of zeros in about 10 KB
    started = time.monotonic()
    response = client.post("/v1/b", content=bomb, headers={"Content-Encoding": "gzip"}, auth=AUTH)
    elapsed = time.monotonic() - started
    error = assert_error(response, 413, "payload_too_large")
    assert "500 KB" in error["message"]
    assert elapsed < 5, elapsed  # it stops inflating at the limit (the whole bomb is 10 MB)


def test_limits_apply_to_the_decompressed_bytes(client: TestClient, broker: EmbeddedBroker) -> None:
    # 600 KB of events compresses to a few KB: over the request limit once decompressed.
    padded = [{"type": "page", "userId": uid(), "properties": {"pad": "x" * 1000}}] * 600
    body = gzip.compress(orjson.dumps({"batch": padded}))
    assert len(body) < 50 * 1024
    response = client.post("/v1/b", content=body, headers={"Content-Encoding": "gzip"}, auth=AUTH)
    assert_error(response, 413, "payload_too_large")
    # One event over 32 KB once decompressed: 413 alone, rejected by index inside a batch.
    user = uid()
    huge = {"userId": user, "event": "E", "properties": {"blob": "y" * (33 * 1024)}}
    single = client.post(
        "/v1/t",
        content=gzip.compress(orjson.dumps(huge)),
        headers={"Content-Encoding": "gzip"},
        auth=AUTH,
    )
    assert "32 KB" in assert_error(single, 413, "event_too_large")["message"]
    batch = {"batch": [{**huge, "type": "track"}, {"type": "page", "userId": user}]}
    mixed = client.post(
        "/v1/b",
        content=gzip.compress(orjson.dumps(batch)),
        headers={"Content-Encoding": "gzip"},
        auth=AUTH,
    )
    assert mixed.json()["accepted"] == 1 and mixed.json()["rejected"][0]["index"] == 0
    # Under the limit once decompressed, the same size compressed or not: accepted.
    fits = [{"type": "page", "userId": user, "properties": {"pad": "z" * 1000}}] * 400
    body = gzip.compress(orjson.dumps({"batch": fits}))
    ok = client.post("/v1/b", content=body, headers={"Content-Encoding": "gzip"}, auth=AUTH)
    assert ok.json()["accepted"] == 400


def test_unknown_content_encoding_is_415(client: TestClient) -> None:
    for encoding in ("br", "compress", "gzip, br"):
        response = client.post(
            "/v1/track",
            content=b'{"userId": "u", "event": "E"}',
            headers={"Content-Encoding": encoding},
            auth=AUTH,
        )
        assert_error(response, 415, "unsupported_encoding")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_original_timestamp_is_the_event_time_skew_corrected(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    """RudderStack's SDKs send originalTimestamp and sentAt: a device clock 2 h fast, an event
    5 minutes before it was sent, lands 5 minutes before it was received."""
    fast = datetime.now(UTC) + timedelta(hours=2)
    user = uid()
    rudder = {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": user,
        "originalTimestamp": iso(fast - timedelta(minutes=5)),
        "sentAt": iso(fast),
        "channel": "web",
        "rudderId": str(uuid.uuid4()),
        "request_ip": "203.0.113.7",
        "context": {"library": {"name": "analytics-python"}},
    }
    response = client.post("/v1/batch", json={"batch": [rudder], "sentAt": iso(fast)}, auth=AUTH)
    assert response.json() == {"success": True, "accepted": 1, "rejected": []}
    (event,) = landed(broker, user)
    skew = (event.received_at - event.timestamp).total_seconds()
    assert 299 <= skew <= 301, skew
    assert event.original_timestamp == fast - timedelta(minutes=5)
    # With both fields, timestamp wins (still skew-corrected).
    both = uid()
    client.post(
        "/v1/track",
        json={
            "userId": both,
            "event": "E",
            "timestamp": iso(fast - timedelta(minutes=1)),
            "originalTimestamp": iso(fast - timedelta(hours=3)),
            "sentAt": iso(fast),
        },
        auth=AUTH,
    )
    (event,) = landed(broker, both)
    assert 59 <= (event.received_at - event.timestamp).total_seconds() <= 61


def test_unknown_top_level_fields_are_ignored(client: TestClient, broker: EmbeddedBroker) -> None:
    """RudderStack's top-level `channel: "web"` names its SDK's platform, not the marketing
    channel: the channel comes from context/properties.channel and the rules."""
    user = uid()
    response = client.post(
        "/v1/t",
        json={
            "userId": user,
            "event": "Signed Up",
            "channel": "web",
            "rudderId": "r-1",
            "request_ip": "203.0.113.7",
            "integrations": {"All": True},
            "somethingNew": {"nested": [1, 2]},
            "context": {"campaign": {"medium": "email"}},
        },
        auth=AUTH,
    )
    assert response.json() == {"success": True, "accepted": 1, "rejected": []}
    (event,) = landed(broker, user)
    assert event.channel == "email"


def test_every_error_has_code_and_message(broker: EmbeddedBroker) -> None:
    app = create_app(settings_for(broker.bootstrap, "sqlite://", write_keys=KEYS))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.post("/v1/t", content=b"{nope", auth=AUTH), 400, "invalid_json")
        assert_error(c.post("/v1/t", content=b"[1]", auth=AUTH), 400, "invalid_json")
        assert_error(c.post("/v1/t", json={"userId": "u"}, auth=AUTH), 400, "invalid_event")
        assert_error(c.post("/v1/b", json={"batch": 3}, auth=AUTH), 400, "invalid_batch")
        many = {"batch": [{"type": "page", "userId": "u"}] * 2501}
        assert_error(c.post("/v1/b", json=many, auth=AUTH), 400, "too_many_events")
        assert_error(c.post("/v1/t", json={"userId": "u", "event": "E"}), 401, "unauthorized")
        assert_error(c.post("/v1/nothing", json={}, auth=AUTH), 404, "not_found")
        assert_error(c.get("/v1/track"), 405, "method_not_allowed")
        big = b'{"batch": [' + b" " * (500 * 1024) + b"]}"
        assert_error(c.post("/v1/b", content=big, auth=AUTH), 413, "payload_too_large")
        # An unexpected failure is a 500 with the same body (the publisher breaks here).
        app.state.ingest.publisher.publish = lambda messages: 1 / 0
        broken = c.post("/v1/t", json={"userId": uid(), "event": "E"}, auth=AUTH)
        assert_error(broken, 500, "internal_error")


def test_rate_limit_sends_retry_after_and_reset(broker: EmbeddedBroker) -> None:
    settings = settings_for(
        broker.bootstrap, "sqlite://", write_keys=KEYS, rate_limit_per_s=0.1, rate_limit_burst=5
    )
    with TestClient(create_app(settings)) as limited:
        batch = [{"type": "page", "userId": uid()}] * 5
        assert limited.post("/v1/b", json={"batch": batch}, auth=AUTH).status_code == 200
        response = limited.post(
            "/v1/t", json={"userId": uid(), "event": "E"}, auth=AUTH, headers={"Origin": ORIGIN}
        )
        assert_error(response, 429, "rate_limited")
        # A cross-origin script (the browser SDK) may read both headers.
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "retry-after" in exposed and "x-ratelimit-reset" in exposed
        # Both in seconds to wait (one event at 0.1 a second: 10 s, less the time since the
        # bucket emptied), as the browser SDK reads them.
        wait = response.headers["Retry-After"]
        assert response.headers["X-RateLimit-Reset"] == wait and 5 <= int(wait) <= 10


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b", "/beacon/v1/batch", "/v1/track"])
@pytest.mark.parametrize(
    "headers", ["content-type", "content-type,authorization,anonymousid,content-encoding"]
)
def test_cors_preflight_for_browser_paths(client: TestClient, path: str, headers: str) -> None:
    response = client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in headers.split(","))


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_cross_origin_posts_carry_cors_headers(
    client: TestClient, broker: EmbeddedBroker, content_type: str
) -> None:
    user = uid()
    body = orjson.dumps({"anonymousId": user, "writeKey": "test-key", "name": "Home"})
    response = client.post(
        "/v1/p", content=body, headers={"Content-Type": content_type, "Origin": ORIGIN}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    error = client.post("/v1/p", content=b"{", headers={"Origin": ORIGIN})
    assert error.headers["access-control-allow-origin"] in ("*", ORIGIN)  # errors readable too
    assert landed(broker, user)


def test_openapi_lists_every_route_with_its_auth(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["writeKey"] == {**schemes["writeKey"], "type": "http", "scheme": "basic"}
    assert "writeKey" in schemes["writeKey"]["description"]  # the body alternative
    assert schemes["writeKeyQuery"] == {
        **schemes["writeKeyQuery"],
        "type": "apiKey",
        "in": "query",
        "name": "writeKey",
    }
    posts = [*SHORT, *SHORT.values(), "b", "batch", "import"]
    for path in [f"/v1/{p}" for p in posts] + ["/beacon/v1/batch"]:
        operation = schema["paths"][path]["post"]
        assert {"application/json", "text/plain"} <= set(operation["requestBody"]["content"])
        assert {"200", "400", "401", "413", "415", "429", "503"} <= set(operation["responses"])
        assert {"writeKey": []} in operation["security"]
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"writeKeyQuery": []} in schema["paths"]["/beacon/v1/batch"]["post"]["security"]
    assert {"success", "code", "message"} <= set(
        schema["components"]["schemas"]["ErrorBody"]["properties"]
    )
    for path in ("/v1/projects/{write_key}/settings", "/projects/{write_key}/settings"):
        assert set(schema["paths"][path]) == {"get"}


def test_rudderstack_anonymous_calls_and_identify_traits(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    """RudderStack's SDKs send userId "" before an identify, and identify traits in
    context.traits: the call is anonymous, and the traits are the identify's."""
    anonymous, user = uid(), uid()
    page = {"type": "page", "userId": "", "anonymousId": anonymous, "name": "Home"}
    identify = {
        "type": "identify",
        "userId": user,
        "anonymousId": anonymous,
        "context": {"traits": {"email": "a@example.com", "plan": "free"}},
        "traits": {"plan": "pro"},  # the top-level traits win over context.traits
    }
    response = client.post("/v1/batch", json={"batch": [page, identify]}, auth=AUTH)
    assert response.json() == {"success": True, "accepted": 2, "rejected": []}
    by_type = {e.type: e for e in landed(broker, anonymous, 2)}
    assert (by_type["page"].user_id, by_type["page"].anonymous_id) == (None, anonymous)
    assert by_type["identify"].traits == {"email": "a@example.com", "plan": "pro"}
    # Empty ids on both sides are no id at all.
    nobody = client.post("/v1/p", json={"userId": "", "anonymousId": ""}, auth=AUTH)
    assert (
        "userId or anonymousId is required" in assert_error(nobody, 400, "invalid_event")["message"]
    )
