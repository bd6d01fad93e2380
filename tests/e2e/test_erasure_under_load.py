"""GDPR erasure ahead of the backlog, through `touchline up`: under a steady stream of events,
ingest rejects the erased id within 2 s of the DELETE's answer; every event of that id accepted
before the erasure is erased by it in both consumers; and after a restart of the embedded stack
(same data directory, a broker that forgot the erasures topic) ingest still rejects it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, select

from services.lifecycle.tables import lifecycle_customers
from services.scoring.tables import scoring_customers
from shared.db import make_engine
from shared.settings import DEV_ADMIN_TOKEN, DEV_WRITE_KEY
from tests.e2e.conftest import Stack, ctrl_c
from tests.support.pipeline import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.wall_clock]

# The acceptance figure is 60 s of load; a shorter run checks the same things.
LOAD_S = float(os.environ.get("TOUCHLINE_TEST_ERASURE_LOAD_S", "60"))
WITHIN_S = 2.0
AUTH = (DEV_WRITE_KEY, "")
EVENTS = ("Product Viewed", "Signed Up", "Order Completed", "Order Completed", "Product Viewed")


class Load:
    """One thread posting batches of 100 events to ingest, a new customer every five events (so
    lifecycle queues stage changes all the while), counting what ingest accepted per customer.
    A 429 (past the write key's rate limit) is retried after its Retry-After, as SDKs do."""

    def __init__(self, ingest: str, run: str, erased: str) -> None:
        self.url = f"{ingest}/v1/batch"
        self.run, self.erased = run, erased
        self.accepted: Counter[str] = Counter()
        self.erasing = threading.Event()  # from now on the erased id is no longer sent
        self.stop = threading.Event()
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._send, name="load", daemon=True)

    def _batch(self, start: int) -> list[dict[str, Any]]:
        events = []
        for n in range(start, start + 100):
            user = f"{self.run}-c{n // 5}"
            if n % 50 == 0 and not self.erasing.is_set():
                user = self.erased
            event = EVENTS[n % len(EVENTS)]
            properties = {"revenue": 20.0, "order_id": f"o{n}"} if event.startswith("Order") else {}
            events.append(
                {
                    "type": "track",
                    "userId": user,
                    "event": event,
                    "properties": properties,
                    "timestamp": f"2026-03-01T10:{n % 60:02d}:00Z",
                    "messageId": f"{self.run}-{n}",
                }
            )
        return events

    def _send(self) -> None:
        n = 0
        with httpx.Client(auth=AUTH, timeout=30) as client:
            while not self.stop.is_set():
                batch = self._batch(n)
                answer = client.post(self.url, json={"batch": batch})
                if answer.status_code == 429:  # the write key's rate limit: back off as SDKs do
                    self.stop.wait(float(answer.headers["Retry-After"]))
                    continue
                if answer.status_code != 200 or answer.json()["rejected"]:
                    self.failure = f"{answer.status_code}: {answer.text[:300]}"
                    return
                self.accepted.update(e["userId"] for e in batch)
                n += len(batch)


def stored(database_url: str, table: Table, run: str) -> dict[str, int]:
    """Each stored customer of this run with its event count."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            c = table.c
            rows = conn.execute(
                select(c.customer_id, c.event_count).where(c.customer_id.like(f"{run}-%"))
            )
            return {customer: int(count) for customer, count in rows}
    finally:
        engine.dispose()


def test_erasure_reaches_ingest_within_2s_under_load_and_survives_a_restart(
    stack: tuple[Stack, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    s, process = stack
    run = uuid.uuid4().hex[:8]
    erased = f"{run}-erased"
    database_url = f"sqlite:///{tmp_path / 'var' / 'touchline.db'}"
    probe = {"userId": erased, "event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z"}

    def ingest_answers() -> int:
        return httpx.post(f"{s.url('INGEST')}/v1/track", json=probe, auth=AUTH).status_code

    load = Load(s.url("INGEST"), run, erased)
    load.thread.start()
    try:
        load.stop.wait(LOAD_S)  # the load runs this long before the erasure
        assert load.failure is None and load.thread.is_alive(), load.failure
        load.erasing.set()
        admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
        answer = httpx.delete(
            f"{s.url('LIFECYCLE')}/v1/customers/{erased}", headers=admin, timeout=60
        )
        answered = time.monotonic()
        assert answer.status_code == 200 and answer.json()["published"], answer.text
        wait_for(ingest_answers, lambda status: status == 403, 30, "ingest to refuse the id")
        took = time.monotonic() - answered
        assert load.failure is None and load.thread.is_alive(), load.failure
    finally:
        load.stop.set()
        load.thread.join(60)
    assert took <= WITHIN_S, f"ingest accepted the erased id for {took:.1f}s after the DELETE"
    assert load.accepted[erased] > 0  # events of the erased id were accepted before the erasure

    # Every accepted event is applied, except the erased id's: those the erasure removed.
    expected = {c: n for c, n in load.accepted.items() if c != erased}
    for table in (lifecycle_customers, scoring_customers):
        wait_for(
            lambda t=table: stored(database_url, t, run),
            lambda counts: counts == expected,
            600,
            f"{table.name} to hold every accepted event but the erased id's",
        )

    assert ctrl_c(process) == 0
    # The same data directory and ports; a fresh, empty broker.
    restarted = s.start_and_wait("the restarted stack's banner")
    try:
        assert ingest_answers() == 403
    finally:
        ctrl_c(restarted)
