"""Hostile input through ingest's HTTP API, the real broker and both consumers on both databases:
each call gets a 4xx with a reason or is applied by lifecycle and scoring alike, never a 5xx and
never dead-lettered. And query parameters at the edges of their types get 400, never 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.ingest.api import create_app as ingest_app
from services.lifecycle.api import create_app as lifecycle_app
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers
from services.scoring import handlers as scoring_handlers
from services.scoring.api import create_app as scoring_app
from services.scoring.tables import scoring_customers
from shared.db import make_engine
from shared.events import TOUCHPOINTS, dlq
from shared.kafka import OutgoingMessage, Publisher
from shared.runtime import ConsumerService
from tests.support import lifecycle as support
from tests.support.pipeline import events_per_customer, read_topic, settings_for, wait_for
from touchline.broker import EmbeddedBroker

WRITE = ("test-key", "")
READ = {"Authorization": "Bearer test-admin"}


def nested(levels: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def order(user: str, revenue: Any, order_id: str = "o-1", event: str = "Order Completed") -> Any:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": {"order_id": order_id, "revenue": revenue},
    }


def call(user: str, **fields: Any) -> dict[str, Any]:
    return {"userId": user, "event": "E", **fields}


def imported(user: str, timestamp: str) -> dict[str, Any]:
    return {"batch": [{"type": "track", **call(user, timestamp=timestamp)}]}


def hostile(run: str) -> list[tuple[str, str, dict[str, Any], float | None]]:
    """(route, customer, body, its net revenue if accepted, None if it must be rejected)."""
    u = f"{run}-u"
    track, old = "/v1/track", "/v1/import"
    odd = f"{u}18 \u202eemoji \U0001f600"
    return [
        (track, f"{u}1", call(f"{u}1", properties=nested(220)), None),
        (track, f"{u}2", call(f"{u}2", properties=nested(253)), None),
        (track, f"{u}3", call(f"{u}3", traits=nested(400)), None),
        (track, f"{u}4", call(f"{u}4", timestamp="0001-01-01T00:00:00Z"), None),
        (track, f"{u}5", call(f"{u}5", timestamp="0001-01-01T00:00:00+01:00"), None),
        (old, f"{u}6", imported(f"{u}6", "9999-12-31T23:59:59Z"), None),
        (track, f"{u}7", order(f"{u}7", 1.7e308), None),
        (track, f"{u}8", order(f"{u}8", "NaN"), None),
        (track, f"{u}9", order(f"{u}9", -1e13), None),
        (track, f"{u}10", call(f"{u}10\u0000x"), None),
        (track, f"{u}11", order(f"{u}11", 5, order_id="o" * 256), None),
        # Accepted: applied alike by both consumers.
        (track, f"{u}12", order(f"{u}12", -25.5), -25.5),
        (track, f"{u}13", order(f"{u}13", 1e12), 1e12),
        (track, f"{u}14", order(f"{u}14", "-1e12"), -1e12),
        (track, f"{u}15", call(f"{u}15", properties=nested(32)), 0.0),
        (old, f"{u}16", imported(f"{u}16", "1900-01-01T00:00:00Z"), 0.0),
        (old, f"{u}17", imported(f"{u}17", "2200-12-31T23:59:59Z"), 0.0),
        (track, odd, {"userId": odd, "event": "\u0000" * 3 + "x" * 5000}, 0.0),
        (track, f"{u}19", order(f"{u}19", 0.1, order_id="\U0001f600" * 255), 0.1),
    ]


def revenues(db_url: str, customers: list[str]) -> dict[str, tuple[float, float]]:
    """Each customer's net revenue in lifecycle and in scoring."""
    lc, sc = lifecycle_customers.c, scoring_customers.c
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            life = dict(
                conn.execute(
                    select(lc.customer_id, lc.revenue).where(lc.customer_id.in_(customers))
                ).all()
            )
            score = dict(
                conn.execute(
                    select(sc.customer_id, sc.revenue_total).where(sc.customer_id.in_(customers))
                ).all()
            )
        return {c: (life[c], score[c]) for c in customers if c in life and c in score}
    finally:
        engine.dispose()


@pytest.fixture
def consumers(own_broker: EmbeddedBroker, db_url: str) -> Iterator[list[ConsumerService]]:
    settings = settings_for(own_broker.bootstrap, db_url)
    services = [
        ConsumerService(settings, name="lifecycle", handler=build_engine(settings).apply),
        ConsumerService(settings, name="scoring", handler=scoring_handlers.apply),
    ]
    with ExitStack() as stack:
        for service in services:
            service.start()
            stack.callback(service.stop)
        yield services


def test_hostile_calls_get_a_reason_or_are_applied_by_both_consumers(
    own_broker: EmbeddedBroker, db_url: str, consumers: list[ConsumerService]
) -> None:
    run = uuid.uuid4().hex[:8]
    cases = hostile(run)
    api = settings_for(own_broker.bootstrap, db_url, run_consumer=False)
    with TestClient(ingest_app(api)) as ingest:
        accepted: dict[str, float] = {}
        for route, customer, call, revenue in cases:
            response = ingest.post(route, json=call, auth=WRITE)
            assert response.status_code < 500, (customer, response.text)
            body = response.json()
            reasons = [body["message"]] if response.status_code >= 400 else body["rejected"]
            if revenue is None:
                assert reasons and all(reasons), (customer, response.text)
            else:
                assert not reasons, (customer, response.text)
                accepted[customer] = revenue
        # The same calls in one batch: 200, each hostile one rejected by index with its reason.
        batch = [{"type": "track", **c} for r, _, c, _ in cases if r == "/v1/track"]
        for call in batch:
            call["userId"] = f"{call['userId']}-b" if "\x00" not in call["userId"] else "x\x00"
        response = ingest.post("/v1/batch", json={"batch": batch}, auth=WRITE)
        assert response.status_code == 200, response.text
        tracked = [(c, rev) for r, c, _, rev in cases if r == "/v1/track"]
        refused = {item["index"]: item["reason"] for item in response.json()["rejected"]}
        assert sorted(refused) == [i for i, (_, rev) in enumerate(tracked) if rev is None]
        assert all(refused.values())
        for i, (_, revenue) in enumerate(tracked):
            if revenue is not None:
                accepted[batch[i]["userId"]] = revenue

    wait_for(
        lambda: [s.loop.stats.applied if s.loop else 0 for s in consumers],
        lambda applied: min(applied) >= len(accepted),
        90,
        f"{len(accepted)} accepted events applied by both consumers",
    )
    customers = sorted(accepted)
    ones = dict.fromkeys(customers, 1)
    assert events_per_customer(db_url, lifecycle_customers, customers) == ones
    assert events_per_customer(db_url, scoring_customers, customers) == ones
    assert revenues(db_url, customers) == {c: (r, r) for c, r in accepted.items()}
    for service in consumers:
        assert service.loop is not None and service.loop.stats.dead_lettered == 0
    # Read the dead-letter topic to its end: a marker keyed by each accepted customer lands after
    # any dead letter of theirs (same key, same partition); nothing but the markers names this run.
    markers = {key: f"{run}-end-of-dlq-{i}" for i, key in enumerate(sorted(accepted))}
    publisher = Publisher(own_broker.bootstrap, client_id="test", timeout_s=30)
    try:
        publisher.publish(
            [OutgoingMessage(dlq(TOUCHPOINTS), k, m.encode()) for k, m in markers.items()]
        )
    finally:
        publisher.close()
    records = read_topic(own_broker.bootstrap, dlq(TOUCHPOINTS), run, len(markers))
    assert sorted(r.value.decode() for r in records) == sorted(markers.values())


def test_a_refund_subtracts_however_it_is_signed(
    own_broker: EmbeddedBroker, db_url: str, consumers: list[ConsumerService]
) -> None:
    run = uuid.uuid4().hex[:8]
    calls = {
        f"{run}-plus": [order(f"{run}-plus", 30), order(f"{run}-plus", 10, event="Order Refunded")],
        f"{run}-minus": [
            order(f"{run}-minus", 30),
            order(f"{run}-minus", -10, event="Order Refunded"),
        ],
        f"{run}-negative": [order(f"{run}-negative", -30)],
    }
    api = settings_for(own_broker.bootstrap, db_url, run_consumer=False)
    with TestClient(ingest_app(api)) as ingest:
        for events in calls.values():
            response = ingest.post("/v1/batch", json={"batch": events}, auth=WRITE)
            assert (response.json()["accepted"], response.json()["rejected"]) == (len(events), [])
    customers = sorted(calls)
    wait_for(
        lambda: [s.loop.stats.applied if s.loop else 0 for s in consumers],
        lambda applied: min(applied) >= 5,
        90,
        "five events applied by both consumers",
    )
    assert revenues(db_url, customers) == {
        f"{run}-plus": (20.0, 20.0),
        f"{run}-minus": (20.0, 20.0),
        f"{run}-negative": (-30.0, -30.0),
    }


OUT_OF_RANGE_TIMES = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01",
    "1899-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999",
    "2201-01-01T00:00:00Z",
    "1e308",
    "-1",
    "nan",
    "",
    "2026-02-30",
]
OUT_OF_RANGE_DATES = ["0001-01-01", "1899-12-31", "9999-12-31", "2201-01-01", "0", "", "2026-02-30"]
IN_RANGE_TIMES = ["1900-01-01T00:00:00Z", "1900-01-01T00:00:00", "2200-12-31T22:59:59-01:00"]


def test_query_parameters_at_the_edges_of_their_types_get_400(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    api = settings_for(own_broker.bootstrap, sqlite_url, run_consumer=False)
    bought = support.order(support.day(0), "o-1", 40.0, user="buyer")
    with support.sessions(sqlite_url) as factory:  # one customer with an order in both
        support.feed(factory, build_engine(api), [bought])
        with factory.begin() as session:
            scoring_handlers.apply(session, [bought])
    with (
        TestClient(lifecycle_app(api)) as lifecycle,
        TestClient(scoring_app(api)) as scoring,
    ):
        fixed = {"/v1/conversion": {"from": "visitor", "to": "engaged"}}
        time_routes = [
            (lifecycle, "/v1/customers/buyer", "as_of"),
            (lifecycle, "/v1/stages", "since"),
            (lifecycle, "/v1/stages", "until"),
            (lifecycle, "/v1/conversion", "since"),
            (lifecycle, "/v1/conversion", "until"),
            (lifecycle, "/v1/conversion/funnel", "since"),
            (lifecycle, "/v1/conversion/funnel", "until"),
            (lifecycle, "/v1/conversion/cohorts", "since"),
            (lifecycle, "/v1/conversion/cohorts", "until"),
        ]
        date_routes = [
            (scoring, "/v1/customers/buyer/scores", "as_of"),
            (scoring, "/v1/model/validation", "calibration_end"),
            (scoring, "/v1/model/validation", "holdout_end"),
        ]
        number_routes = [
            (lifecycle, "/v1/conversion/funnel", "lookback_days"),
            (scoring, "/v1/customers/buyer/scores", "horizon_days"),
            (scoring, "/v1/value/channels", "horizon_days"),
        ]
        numbers = ["1e308", "inf", "-inf", "nan", "0", "-1", "9" * 30, "1.5e400", ""]
        cases = (
            [(c, p, n, v) for c, p, n in time_routes for v in OUT_OF_RANGE_TIMES]
            + [(c, p, n, v) for c, p, n in date_routes for v in OUT_OF_RANGE_DATES]
            + [(c, p, n, v) for c, p, n in number_routes for v in numbers]
        )
        for client, path, name, value in cases:
            response = client.get(path, params={**fixed.get(path, {}), name: value}, headers=READ)
            assert response.status_code == 400, (path, name, value, response.text)
            assert name in response.json()["detail"], response.text
        for client, path, name in time_routes:
            for value in IN_RANGE_TIMES:
                response = client.get(
                    path, params={**fixed.get(path, {}), name: value}, headers=READ
                )
                assert response.status_code < 500, (path, name, value, response.text)
        response = scoring.post(
            "/v1/model/refit", json={"observation_end": "0001-01-01"}, headers=READ
        )
        assert response.status_code == 400, response.text
