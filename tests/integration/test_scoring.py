"""Scoring through the real broker and both databases: purchase counters, live RFM, segments,
and the value model refit on the CDNOW sample reproducing the published parameters."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.scoring import handlers
from services.scoring.api import create_app
from shared.events import Touchpoint
from shared.runtime import ConsumerService
from tests.support import cdnow_events
from tests.support.pipeline import publish, settings_for, wait_for
from touchline.broker import EmbeddedBroker

READ = {"Authorization": "Bearer test-read"}
ADMIN = {"Authorization": "Bearer test-admin"}


@contextmanager
def scoring(bootstrap: str, db_url: str) -> Iterator[tuple[ConsumerService, TestClient]]:
    consumer = ConsumerService(
        settings_for(bootstrap, db_url), name="scoring", handler=handlers.apply
    )
    consumer.start()
    api_settings = settings_for(bootstrap, db_url, run_consumer=False, refit_interval_s=0)
    try:
        with TestClient(create_app(api_settings)) as client:
            yield consumer, client
    finally:
        consumer.stop()


def drained(consumer: ConsumerService, expected: int) -> None:
    wait_for(
        lambda: (
            consumer.loop.stats.applied + consumer.loop.stats.duplicates if consumer.loop else 0
        ),
        lambda n: n >= expected,
        120,
        f"{expected} events applied",
    )


def order(
    customer: str, order_id: str, at: datetime, amount: float, event: str = "Order Completed"
) -> Touchpoint:
    return Touchpoint(
        message_id=f"{customer}-{event}-{order_id}-{at.isoformat()}",
        type="track",
        event=event,
        user_id=customer,
        channel="web",
        source="test",
        timestamp=at,
        received_at=at,
        properties={"order_id": order_id},
        revenue=amount,
        currency="USD",
    )


def test_purchases_counters_rfm_and_segments(own_broker: EmbeddedBroker, db_url: str) -> None:
    run = uuid.uuid4().hex[:6]
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    loyal, once, lapsed = f"{run}-loyal", f"{run}-once", f"{run}-lapsed"
    events = [
        # out of order, one order sent twice, a refund that arrives before its order
        order(loyal, "o3", today - timedelta(days=2), 50.0),
        order(loyal, "o1", today - timedelta(days=30), 20.0),
        order(loyal, "o2", today - timedelta(days=10), 30.0),
        order(loyal, "o2", today - timedelta(days=10), 30.0).model_copy(
            update={"message_id": "resent"}
        ),
        order(loyal, "o3", today - timedelta(days=1), 5.0, "Order Refunded"),
        order(once, "p1", today - timedelta(days=5), 15.0),
        order(lapsed, "q1", today - timedelta(days=300), 100.0),
        order(lapsed, "q2", today - timedelta(days=290), 100.0),
        order(f"{run}-filler-1", "f1", today - timedelta(days=100), 10.0),
        order(f"{run}-filler-2", "f2", today - timedelta(days=100), 10.0),
    ]
    page = Touchpoint(
        message_id=f"{run}-page", type="page", user_id=f"{run}-browser", channel="web",
        source="test", timestamp=today, received_at=today,
    )  # fmt: skip
    publish(own_broker.bootstrap, [*events, page])
    with scoring(own_broker.bootstrap, db_url) as (consumer, client):
        drained(consumer, len(events) + 1)
        body = client.get(f"/v1/customers/{loyal}/scores", headers=READ).json()
        assert body["purchases"] == {
            "first_purchase_at": body["purchases"]["first_purchase_at"],
            "last_purchase_at": body["purchases"]["last_purchase_at"],
            "orders": 3,
            "distinct_purchase_days": 3,
            "repeat_purchases": 2,
            "revenue_total": 95.0,
            "mean_repeat_spend": 37.5,  # (30 + 45) / 2: the first day's 20 is not a repeat
        }
        assert body["rfm"]["recency_days"] == 2
        assert (body["rfm"]["r"], body["rfm"]["f"]) == (5, 5)  # most recent, most orders
        assert body["rfm"]["segment"] == "champions"
        assert body["value"]["model_status"] == "not_fitted"
        assert body["value"]["historical_value"] == 95.0
        assert body["value"]["predicted_clv"] is None

        # 5 buyers. R by last purchase day: lapsed < fillers (tied) < once < loyal; F by orders:
        # fillers = once = 1 < lapsed = 2 < loyal = 3. Score = 1 + floor(5 * below / 5).
        expected = {
            lapsed: (1, 4, "at_risk"),
            f"{run}-filler-1": (2, 1, "hibernating"),
            f"{run}-filler-2": (2, 1, "hibernating"),
            once: (4, 1, "promising"),
        }
        for customer, (r, f, segment) in expected.items():
            rfm = client.get(f"/v1/customers/{customer}/scores", headers=READ).json()["rfm"]
            assert (rfm["r"], rfm["f"], rfm["segment"]) == (r, f, segment), customer

        browser = client.get(f"/v1/customers/{run}-browser/scores", headers=READ).json()
        assert browser["purchases"] is None and browser["rfm"] is None
        assert browser["value"]["model_status"] == "no_purchases"

        segments = client.get("/v1/segments", headers=READ).json()
        assert segments["scored_customers"] == 5
        nonzero = {name: n for name, n in segments["segments"].items() if n}
        assert nonzero == {"champions": 1, "at_risk": 1, "hibernating": 2, "promising": 1}

        assert client.get(f"/v1/customers/{run}-nobody/scores", headers=READ).status_code == 404
        assert client.get(f"/v1/customers/{loyal}/scores").status_code == 401
        bad = client.get(f"/v1/customers/{loyal}/scores?as_of=yesterday", headers=READ)
        assert bad.status_code == 400
        assert "as_of" in bad.json()["detail"]
        assert client.get("/v1/model", headers=READ).status_code == 404
        assert client.post("/v1/model/refit", headers=READ).status_code == 403
        # Five buyers cannot support a fit: the refit says so and predictions stay null.
        failed = client.post("/v1/model/refit", headers=ADMIN)
        assert failed.status_code == 200
        assert failed.json()["status"] == "failed" and "at least" in failed.json()["error"]
        value = client.get(f"/v1/customers/{loyal}/scores", headers=READ).json()["value"]
        assert value["model_status"] == "not_fitted" and value["p_alive"] is None


def test_cdnow_refit_reproduces_the_published_model(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    rows = cdnow_events.calibration()
    events = cdnow_events.touchpoints(rows, prefix=uuid.uuid4().hex[:6])
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, db_url) as (consumer, client):
        drained(consumer, len(events))
        response = client.post(
            "/v1/model/refit", json={"observation_end": "1997-09-30"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        model = client.get("/v1/model", headers=READ).json()
        assert model["status"] == "fitted" and model["time_unit"] == "week"
        assert (model["n_customers"], model["n_repeat_buyers"]) == (2357, 946)
        bg = model["bgnbd"]
        for name, published in (("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)):
            assert bg[name] == pytest.approx(published, rel=0.01)
        assert bg["log_likelihood"] == pytest.approx(-9582.4, abs=0.5)
        gg = model["gamma_gamma"]
        for name, published in (("p", 6.25), ("q", 3.74), ("gamma", 15.44)):
            assert gg[name] == pytest.approx(published, rel=0.01)

        # A customer's scores equal a direct computation from the file.
        customer = events[0].user_id
        assert customer is not None
        own = [t for t in rows if f"{events[0].user_id}".endswith(f"-{t.customer}")]
        days: defaultdict[date, float] = defaultdict(float)
        for t in own:
            days[t.day] += t.dollars
        body = client.get(f"/v1/customers/{customer}/scores?as_of=1997-09-30", headers=READ).json()
        ordered = sorted(days)
        assert body["purchases"]["repeat_purchases"] == len(ordered) - 1
        assert body["purchases"]["revenue_total"] == pytest.approx(sum(days.values()), abs=0.01)
        assert body["rfm"]["recency_days"] == (date(1997, 9, 30) - ordered[-1]).days
        assert body["value"]["model_status"] == "fitted"
        assert 0 < body["value"]["p_alive"] <= 1
        assert body["value"]["expected_purchases"] > 0
        assert body["value"]["predicted_clv"] > 0


def test_two_scoring_instances_share_one_population(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    rows = [t for t in cdnow_events.calibration() if t.day.month <= 2]
    events = cdnow_events.touchpoints(rows, prefix=uuid.uuid4().hex[:6])
    buyers = len({e.user_id for e in events})
    settings = settings_for(own_broker.bootstrap, db_url)
    one = ConsumerService(settings, name="scoring", handler=handlers.apply)
    two = ConsumerService(settings, name="scoring", handler=handlers.apply)
    one.start()
    two.start()
    try:
        wait_for(lambda: bool(one.loop and two.loop), bool, 30, "both members to join")
        publish(own_broker.bootstrap, events)
        wait_for(
            lambda: sum(s.loop.stats.applied for s in (one, two) if s.loop),
            lambda n: n >= len(events),
            120,
            "every event applied",
        )
        assert one.loop is not None and two.loop is not None
        assert one.loop.stats.applied > 0 and two.loop.stats.applied > 0
    finally:
        one.stop()
        two.stop()
    api_settings = settings_for(
        own_broker.bootstrap, db_url, run_consumer=False, refit_interval_s=0
    )
    with TestClient(create_app(api_settings)) as client:
        segments = client.get("/v1/segments", headers=READ).json()
        assert segments["scored_customers"] == buyers
        some = events[0].user_id
        rfm = client.get(f"/v1/customers/{some}/scores", headers=READ).json()["rfm"]
        assert 1 <= rfm["r"] <= 5 and 1 <= rfm["f"] <= 5


def test_scheduled_refit_stores_a_model(own_broker: EmbeddedBroker, sqlite_url: str) -> None:
    events = cdnow_events.touchpoints(cdnow_events.calibration(), prefix=uuid.uuid4().hex[:6])
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, sqlite_url) as (consumer, _):
        drained(consumer, len(events))
    settings = settings_for(
        own_broker.bootstrap, sqlite_url, run_consumer=False, refit_interval_s=0.5
    )
    with TestClient(create_app(settings)) as client:
        model = wait_for(
            lambda: client.get("/v1/model", headers=READ),
            lambda response: response.status_code == 200,
            60,
            "the scheduled refit",
        ).json()
        assert model["status"] == "fitted"
        assert model["n_customers"] == 2357
