"""Ordinary operations on the embedded stack lose nothing ingest accepted: Ctrl-C right after a
burst drains before stopping, a killed service is restarted and catches up exactly, and /readyz
tells the truth when the broker dies or the database is locked."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest

from services.lifecycle.tables import lifecycle_customers
from services.scoring.tables import scoring_customers
from shared.settings import DEV_READ_TOKEN, DEV_WRITE_KEY
from tests.e2e.conftest import TOUCHLINE, Stack, ctrl_c
from tests.support.pipeline import events_per_customer, ready, wait_for, wait_until_committed
from touchline.broker import free_port
from touchline.services import CONSUMERS

pytestmark = pytest.mark.e2e

AUTH = (DEV_WRITE_KEY, "")
READ = {"Authorization": f"Bearer {DEV_READ_TOKEN}"}
DETECT_S = 5.0


def batch(run: str, customers: int, per_customer: int, start: int) -> list[dict[str, object]]:
    """`per_customer` events for each of `customers` customers, message ids unique to the run."""
    return [
        {
            "type": "track",
            "userId": f"{run}-c{c}",
            "event": "Product Viewed",
            "messageId": f"{run}-{start + n}-{c}",
            "timestamp": "2026-03-01T10:00:00Z",
        }
        for n in range(per_customer)
        for c in range(customers)
    ]


class Sender:
    """Posts batches to ingest and counts, per customer, the events it accepted (200); a 429 is
    retried after its Retry-After."""

    def __init__(self, url: str, run: str) -> None:
        self.url = f"{url}/v1/batch"
        self.run = run
        self.accepted: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._next = 0

    def send(self, client: httpx.Client, events: list[dict[str, object]]) -> int:
        answer = client.post(self.url, json={"batch": events}, auth=AUTH, timeout=60)
        while answer.status_code == 429:  # past the write key's rate limit: back off as SDKs do
            time.sleep(float(answer.headers["Retry-After"]))
            answer = client.post(self.url, json={"batch": events}, auth=AUTH, timeout=60)
        with self._lock:
            self.statuses[answer.status_code] += 1
            if answer.status_code == 200:
                assert answer.json()["accepted"] == len(events)
                self.accepted.update(str(e["userId"]) for e in events)
        return answer.status_code

    def batches(
        self, count: int, customers: int, per_customer: int
    ) -> list[list[dict[str, object]]]:
        made = []
        for _ in range(count):
            made.append(batch(self.run, customers, per_customer, self._next))
            self._next += per_customer
        return made

    def burst(self, batches: list[list[dict[str, object]]], threads: int = 4) -> None:
        with httpx.Client() as client, ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: self.send(client, b), batches))


def applied(stack: Stack, customers: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    db = f"sqlite:///{stack.env['TOUCHLINE_DATA_DIR']}/touchline.db"
    return (
        events_per_customer(db, lifecycle_customers, customers),
        events_per_customer(db, scoring_customers, customers),
    )


def assert_all_applied_once(stack: Stack, sender: Sender, timeout_s: float) -> None:
    expected = dict(sender.accepted)
    wait_for(
        lambda: applied(stack, sorted(expected)),
        lambda counts: counts == (expected, expected),
        timeout_s,
        f"both consumers to apply exactly the {sum(expected.values())} accepted events",
    )


def pids(stack: Stack) -> dict[str, int]:
    path = Path(stack.env["TOUCHLINE_DATA_DIR"]) / "touchline.pids"
    pids: dict[str, int] = json.loads(path.read_text())
    return pids


def restarted(stack: Stack, name: str, killed: int) -> bool:
    """Has the supervisor replaced the killed process of `name` by one that is ready?"""
    pid = pids(stack).get(name)
    return pid is not None and pid != killed and ready(stack.url(name.upper()))


def all_ready(stack: Stack) -> bool:
    return all(ready(stack.url(name)) for name in ("INGEST", "LIFECYCLE", "SCORING"))


def test_ctrl_c_right_after_a_burst_applies_every_accepted_event_before_stopping(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, process = stack
    sender = Sender(s.url("INGEST"), uuid.uuid4().hex[:8])
    sender.burst(sender.batches(count=40, customers=250, per_customer=2))  # 20,000 events
    assert sender.statuses == {200: 40}
    process.send_signal(signal.SIGINT)
    refused = wait_for(
        lambda: httpx.post(
            f"{s.url('INGEST')}/v1/track", json={"userId": "late", "event": "E"}, auth=AUTH
        ),
        lambda answer: answer.status_code != 200,
        30,
        "ingest to refuse new events",
    )
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json()["code"] == "draining"
    assert process.wait(180) == 0
    output = s.output.read_text()
    assert "ingest now answers 503" in output
    assert "stopped cleanly: every accepted event was applied" in output
    assert sum(sender.accepted.values()) == 20_000

    restarted = s.start_and_wait()  # same data directory and ports
    try:
        assert_all_applied_once(s, sender, 30)
        customer = next(iter(sender.accepted))
        answer = httpx.get(f"{s.url('LIFECYCLE')}/v1/customers/{customer}", headers=READ)
        assert answer.json()["counters"]["events"] == sender.accepted[customer]
    finally:
        assert ctrl_c(restarted) == 0


def test_a_killed_consumer_is_restarted_and_nothing_is_lost_or_counted_twice(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, process = stack
    sender = Sender(s.url("INGEST"), uuid.uuid4().hex[:8])
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                for events in sender.batches(count=1, customers=100, per_customer=2):
                    sender.send(client, events)

    streaming = threading.Thread(target=stream)
    streaming.start()
    try:
        for name in ("lifecycle", "scoring"):
            wait_for(lambda: sum(sender.accepted.values()), lambda n: n >= 2_000, 60, "traffic")
            killed = pids(s)[name]
            os.kill(killed, signal.SIGKILL)
            wait_for(partial(restarted, s, name, killed), bool, 120, f"{name} restarted, ready")
            assert pids(s)["broker"] and all_ready(s)  # the rest kept running
    finally:
        stop.set()
        streaming.join()
    assert set(sender.statuses) == {200}, sender.statuses
    output = s.output.read_text()
    for name in ("lifecycle", "scoring"):
        assert f"{name} exited (code -9)" in output and f"{name} restarted" in output
    assert_all_applied_once(s, sender, 120)
    live = wait_for(
        lambda: httpx.get(f"{s.url('LIFECYCLE')}/v1/live", headers=READ).json(),
        lambda body: body["behind"] == 0,
        30,
        "the dashboard's backlog to reach 0",
    )
    assert live["oldest_unapplied_s"] == 0
    caught_up = 'touchline_consumer_oldest_unapplied_age_seconds{consumer="scoring"} 0.0'
    wait_for(  # the restarted scoring sets the gauge with its first health round
        lambda: httpx.get(f"{s.url('SCORING')}/metrics").text,
        lambda metrics: caught_up in metrics,
        30,
        "scoring's /metrics to show no unapplied event",
    )
    assert ctrl_c(process) == 0


@pytest.mark.wall_clock
def test_readyz_turns_503_within_5s_when_the_broker_dies_or_the_database_is_locked(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, process = stack
    names = ("INGEST", "LIFECYCLE", "SCORING")
    sender = Sender(s.url("INGEST"), uuid.uuid4().hex[:8])
    sender.burst(sender.batches(count=2, customers=20, per_customer=2))
    assert_all_applied_once(s, sender, 60)

    def unready_within(services: tuple[str, ...], reason: str) -> None:
        started, pending = time.monotonic(), set(services)
        while pending and time.monotonic() - started < DETECT_S:
            for name in list(pending):
                answer = httpx.get(f"{s.url(name)}/readyz", timeout=DETECT_S)
                if answer.status_code == 503:
                    assert reason in json.dumps(answer.json()["reasons"]), answer.text
                    pending.discard(name)
        assert not pending, f"still ready after {DETECT_S} s: {pending}"

    # A consumer whose offset commit the kill cut off would have nothing for the broker to lose.
    wait_until_committed(f"127.0.0.1:{s.ports['BROKER']}", CONSUMERS, 30)
    os.kill(pids(s)["broker"], signal.SIGKILL)
    unready_within(names, "broker")
    wait_for(lambda: all_ready(s), bool, 120, "every service ready on the restarted broker")
    assert "THE EMBEDDED BROKER DIED" in s.output.read_text()
    for name in ("LIFECYCLE", "SCORING"):
        notices = httpx.get(f"{s.url(name)}/readyz").json()["notices"]
        assert "committed offsets" in notices[0] and "are lost" in notices[0]
        metrics = httpx.get(f"{s.url(name)}/metrics").text
        assert "touchline_consumer_broker_log_lost_total" in metrics
    later = Sender(s.url("INGEST"), uuid.uuid4().hex[:8])
    later.burst(later.batches(count=2, customers=20, per_customer=2))
    assert_all_applied_once(s, later, 90)  # consumers resumed on the new log

    lock = sqlite3.connect(f"{s.env['TOUCHLINE_DATA_DIR']}/touchline.db", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        unready_within(("LIFECYCLE", "SCORING"), "database")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for(lambda: all_ready(s), bool, 60, "ready again after the lock")
    assert ctrl_c(process) == 0


def test_a_stop_past_its_deadline_says_exactly_how_many_events_each_consumer_left(
    tmp_path: Path,
) -> None:
    s = Stack(tmp_path)
    s.env["TOUCHLINE_STOP_DRAIN_TIMEOUT_S"] = "0"  # no time to drain at all
    process = s.start_and_wait()
    try:
        sender = Sender(s.url("INGEST"), uuid.uuid4().hex[:8])
        sender.burst(sender.batches(count=40, customers=250, per_customer=2))
        assert sender.statuses == {200: 40}
    finally:
        code = ctrl_c(process)
    output = s.output.read_text()
    assert code == 1, output
    assert "STOPPED WITH EVENTS LEFT UNAPPLIED" in output
    found = re.search(r"Per consumer: ([^.]*)\.", output)
    assert found, output
    left = {
        name: int(count.replace(",", ""))
        for name, count in (item.rsplit(" ", 1) for item in found.group(1).split(", "))
    }
    lifecycle, scoring = applied(s, sorted(sender.accepted))
    accepted = sum(sender.accepted.values())
    assert left["lifecycle"] == accepted - sum(lifecycle.values()) > 0
    assert left["scoring"] == accepted - sum(scoring.values())


def test_second_stack_on_the_same_data_dir_refuses_clearly(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, process = stack
    other_ports = {f"TOUCHLINE_{name}_PORT": str(free_port()) for name in s.ports}
    second = subprocess.run(
        [TOUCHLINE, "up"], env={**s.env, **other_ports}, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1
    assert f"another stack (pid {process.pid}) runs on the data directory" in second.stderr
    assert all_ready(s), "the first stack must be left alone"


@pytest.mark.parametrize(
    ("command", "service"), [(["demo"], "ingest"), (["report", "conversion"], "lifecycle")]
)
def test_demo_and_report_read_the_port_settings_and_say_when_no_stack_answers(
    command: list[str], service: str
) -> None:
    port = str(free_port())  # nothing listens there
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")},
        f"TOUCHLINE_{service.upper()}_PORT": port,
    }
    answer = subprocess.run([TOUCHLINE, *command], env=env, capture_output=True, text=True)
    assert answer.returncode == 1
    assert answer.stderr.startswith(f"touchline {command[0]}: no {service} service answers at ")
    assert f"http://127.0.0.1:{port}" in answer.stderr and "Traceback" not in answer.stderr
