"""The whole stack as a user runs it: `touchline up` as a process, HTTP -> Kafka -> both
consumers -> both query APIs, a GDPR erasure, then a clean Ctrl-C; no customer data in any log."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from shared.settings import DEV_ADMIN_TOKEN, DEV_READ_TOKEN, DEV_WRITE_KEY
from tests.e2e.conftest import TOUCHLINE, Stack
from tests.support.pipeline import ready, wait_for
from touchline.broker import port_in_use

pytestmark = pytest.mark.e2e


def test_event_flows_from_ingest_to_both_query_apis_is_erased_and_never_logged(
    stack: tuple[Stack, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    s, process = stack
    banner = s.output.read_text()
    assert DEV_WRITE_KEY in banner and DEV_READ_TOKEN in banner
    assert f"{s.url('INGEST')}/v1/track" in banner  # the curl line to send a first event
    for name in ("INGEST", "LIFECYCLE", "SCORING"):
        assert ready(s.url(name)), name

    customer = f"e2e-{uuid.uuid4().hex}"
    auth = (DEV_WRITE_KEY, "")
    track = {"userId": customer, "event": "Signed Up", "timestamp": "2026-03-01T10:00:00Z"}
    page = {
        "userId": customer,
        "name": "Pricing",
        "timestamp": "2026-03-01T10:05:00Z",
        "context": {"page": {"referrer": "https://www.instagram.com/"}},
    }
    email = f"{customer}@example.com"
    identify = {"userId": customer, "traits": {"email": email}, "timestamp": "2026-03-01T09:00:00Z"}
    bad = {"userId": customer, "traits": {"email": email}}  # a track without its event name
    assert httpx.post(f"{s.url('INGEST')}/v1/track", json=track, auth=auth).status_code == 200
    assert httpx.post(f"{s.url('INGEST')}/v1/page", json=page, auth=auth).status_code == 200
    assert httpx.post(f"{s.url('INGEST')}/v1/identify", json=identify, auth=auth).status_code == 200
    assert httpx.post(f"{s.url('INGEST')}/v1/track", json=bad, auth=auth).status_code == 400

    headers = {"Authorization": f"Bearer {DEV_READ_TOKEN}"}
    lifecycle = s.url("LIFECYCLE") + f"/v1/customers/{customer}"
    body = wait_for(
        lambda: httpx.get(lifecycle, headers=headers).json(),
        lambda b: b.get("counters", {}).get("events") == 3,
        30,
        "lifecycle to show the three events",
    )
    assert (body["customer_id"], body["stage"]) == (customer, "engaged")  # a sign-up
    assert body["stage_entered_at"].startswith("2026-03-01T09:00:00")  # identify with an email
    assert body["last_touch_at"].startswith("2026-03-01T10:05:00")
    journey = httpx.get(lifecycle + "/journey", headers=headers).json()["transitions"]
    assert [t["to_stage"] for t in journey] == ["visitor", "engaged"]

    scoring = s.url("SCORING") + f"/v1/customers/{customer}/scores"
    body = wait_for(
        lambda: httpx.get(scoring, headers=headers).json(),
        lambda b: b.get("event_count") == 3,
        30,
        "scoring to show the three events",
    )
    assert body["customer_id"] == customer
    assert body["last_channel"] == "social"  # the later touch: an Instagram referral
    assert body["first_seen"].startswith("2026-03-01T09:00:00")
    for url in (lifecycle, scoring):
        assert httpx.get(url).status_code == 401
        unknown = url.replace(customer, "nobody-" + customer)
        assert httpx.get(unknown, headers=headers).status_code == 404

    admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
    erased = httpx.delete(lifecycle, headers=admin)
    assert erased.status_code == 200 and erased.json()["ids"] == [customer]
    for url in (lifecycle, scoring):
        wait_for(
            lambda u=url: httpx.get(u, headers=headers).status_code,
            lambda code: code == 404,
            30,
            f"{url} to be erased",
        )
    wait_for(
        lambda: httpx.post(f"{s.url('INGEST')}/v1/track", json=track, auth=auth).status_code,
        lambda status: status == 403,
        30,
        "ingest to refuse the erased customer",
    )

    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    for name in ("INGEST", "LIFECYCLE", "SCORING"):
        assert not ready(s.url(name)), f"{name} still answering after Ctrl-C"
    assert "stopped." in s.output.read_text()
    logs = [s.output, *sorted((tmp_path / "var" / "logs").glob("*.log"))]
    assert len(logs) >= 4  # touchline up's output, the broker and the three services
    for path in logs:
        text = path.read_text(errors="replace")
        assert email not in text and customer not in text, f"customer data in {path.name}"


def test_second_stack_on_the_same_ports_refuses_clearly(
    stack: tuple[Stack, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    s, _ = stack
    second = subprocess.run(
        [TOUCHLINE, "up"],
        env={**s.env, "TOUCHLINE_DATA_DIR": str(tmp_path / "other")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert "port already in use" in second.stderr
    assert f"TOUCHLINE_INGEST_PORT={s.ports['INGEST']}" in second.stderr
    assert ready(s.url("INGEST")), "the first stack must be left alone"


def test_killing_touchline_up_takes_its_services_and_broker_with_it(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, process = stack
    process.kill()  # SIGKILL: no chance to stop its children itself
    process.wait()
    for name in ("INGEST", "LIFECYCLE", "SCORING"):
        wait_for(lambda n=name: ready(s.url(n)), lambda up: not up, 30, f"{name} to stop")
    wait_for(
        lambda: port_in_use(s.ports["BROKER"]), lambda used: not used, 30, "the broker to stop"
    )
