"""The lifecycle service through the real broker and both databases: identity scenarios, two
consumer instances merging across partitions, transitions published only after commit (also
across a broker outage), the API, and the CDNOW replay's stage counts."""

from __future__ import annotations

import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle.api import create_app
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers, lifecycle_outbox
from services.lifecycle.workers import relay
from shared.events import STAGE_CHANGES, all_topics
from shared.kafka import BrokerUnavailable, OutgoingMessage, Publisher, ensure_topics
from shared.outbox import relay_once
from shared.runtime import ConsumerService
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support import cdnow_events
from tests.support.cdnow import transactions
from tests.support.lifecycle import day, feed, identify, order, refund, sessions, touch
from tests.support.pipeline import publish, read_topic, settings_for, wait_for
from touchline.broker import EmbeddedBroker

READ = {"Authorization": "Bearer test-read"}
ADMIN = {"Authorization": "Bearer test-admin"}


def consumer(bootstrap: str, db_url: str) -> ConsumerService:
    settings = settings_for(bootstrap, db_url)
    engine = build_engine(settings)
    return ConsumerService(settings, name="lifecycle", handler=engine.apply, workers=[relay])


@contextmanager
def lifecycle(bootstrap: str, db_url: str) -> Iterator[tuple[ConsumerService, TestClient]]:
    service = consumer(bootstrap, db_url)
    service.start()
    try:
        with TestClient(create_app(settings_for(bootstrap, db_url, run_consumer=False))) as api:
            yield service, api
    finally:
        service.stop()


def applied(*services: ConsumerService) -> int:
    return sum(s.loop.stats.applied + s.loop.stats.duplicates for s in services if s.loop)


def drain(expected: int, *services: ConsumerService) -> None:
    wait_for(lambda: applied(*services), lambda n: n >= expected, 120, f"{expected} events")


def test_identity_purchase_refund_and_win_back_scenarios(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:6]
    browse, early, aliased, refunded, winback = (f"{run}-{n}" for n in range(5))
    events = [
        # anonymous browsing (keyed by the anonymous id), then identify, then a purchase
        touch(day(0), anon=f"{browse}-a", channel="social"),
        touch(day(1), anon=f"{browse}-a", event="Product Viewed"),
        identify(day(2), browse, f"{browse}-a", email="b@example.com"),
        order(day(3), "o1", 40.0, user=browse),
        # identify first, anonymous events later (on another partition)
        identify(day(5), early, f"{early}-a"),
        touch(day(1), anon=f"{early}-a", channel="email"),
        order(day(6), "o1", 10.0, anon=f"{early}-a"),
        # alias
        touch(day(0), anon=f"{aliased}-a", event="Signed Up", channel="mobile"),
        touch(day(1), user=aliased, kind="alias", previous=f"{aliased}-a"),
        # refund of a big order
        order(day(1), "big", 600.0, user=refunded),
        refund(day(2), "big", 600.0, user=refunded),
        # win-back after 200 days
        order(day(0), "o1", 20.0, user=winback),
        order(day(200), "o2", 20.0, user=winback),
    ]
    publish(own_broker.bootstrap, events)
    with lifecycle(own_broker.bootstrap, db_url) as (service, api):
        drain(len(events), service)
        one = api.get(f"/v1/customers/{browse}-a", headers=READ).json()
        assert one["customer_id"] == browse and one["stage"] == "first_purchase"
        assert one["first_touch_channel"] == "social" and one["ids"] == [browse, f"{browse}-a"]
        assert one["counters"] == {"events": 4, "orders": 1, "revenue": 40.0}
        journey = api.get(f"/v1/customers/{browse}/journey", headers=READ).json()
        steps = [(t["to_stage"], t["at"][:10]) for t in journey["transitions"]]
        assert steps == [
            ("visitor", "2026-01-01"),
            ("engaged", "2026-01-03"),
            ("first_purchase", "2026-01-04"),
        ]
        assert [t["channel"] for t in journey["transitions"][-1]["touch_path"]] == [
            "social",
            "web",
            "web",
            "web",
        ]
        two = api.get(f"/v1/customers/{early}", headers=READ).json()
        assert two["first_touch_channel"] == "email" and two["stage"] == "first_purchase"
        three = api.get(f"/v1/customers/{aliased}-a", headers=READ).json()
        assert three["customer_id"] == aliased and three["stage"] == "engaged"
        four = api.get(f"/v1/customers/{refunded}", headers=READ).json()
        assert four["counters"]["revenue"] == 0 and four["stage"] == "loyal"
        five = api.get(f"/v1/customers/{winback}/journey", headers=READ).json()
        wins = [t for t in five["transitions"] if t["kind"] == "reactivated"]
        assert [(t["from_stage"], t["to_stage"]) for t in wins] == [("lapsed", "active")]
        # every transition reaches the topic, after its commit
        changes = read_topic(own_broker.bootstrap, STAGE_CHANGES, browse, 3)
        assert sorted(orjson.loads(r.value)["to_stage"] for r in changes) == [
            "engaged",
            "first_purchase",
            "visitor",
        ]
        assert {r.key for r in changes} == {browse.encode()}


def test_two_instances_merge_identities_across_partitions(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:6]
    events = []
    people = [f"{run}-{n}" for n in range(150)]
    for n, person in enumerate(people):
        anon = f"{person}-anon"
        events += [
            touch(day(0) + timedelta(minutes=n), anon=anon, channel="social"),
            touch(day(1), anon=anon),
            identify(day(2), person, anon, email=f"{n}@example.com"),
            touch(day(3), anon=anon, user=person),
            order(day(4), "o1", 30.0, user=person),
        ]
    one, two = consumer(own_broker.bootstrap, db_url), consumer(own_broker.bootstrap, db_url)
    one.start()
    two.start()
    try:
        wait_for(lambda: bool(one.loop and two.loop), bool, 30, "both members to join")
        publish(own_broker.bootstrap, events)
        drain(len(events), one, two)
        assert one.loop and two.loop and one.loop.stats.applied and two.loop.stats.applied
    finally:
        one.stop()
        two.stop()
    with sessions(db_url) as db, db() as session:
        c = lifecycle_customers.c
        rows = session.execute(
            select(c.customer_id, c.stage, c.event_count, c.first_touch_channel).where(
                c.customer_id.like(f"{run}-%")
            )
        ).all()
    assert len(rows) == len(people)  # no anonymous profile left behind
    assert {r.customer_id for r in rows} == set(people)
    assert {(r.stage, r.event_count, r.first_touch_channel) for r in rows} == {
        ("first_purchase", 5, "social")
    }


def test_transitions_wait_in_the_outbox_while_the_broker_is_down(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    engine = build_engine(settings_for(own_broker.bootstrap, sqlite_url))
    user = f"{uuid.uuid4().hex[:8]}-outage"
    publisher = Publisher(own_broker.bootstrap, client_id="test-outbox", timeout_s=2)
    with sessions(sqlite_url) as db:
        try:
            own_broker.stop()
            feed(db, engine, [order(day(1), "o", 10, user=user)])
            with pytest.raises(BrokerUnavailable):
                relay_once(db, lifecycle_outbox, publisher)
            with db() as session:  # rolled back: still queued
                assert session.scalar(select(func.count()).select_from(lifecycle_outbox)) == 3
            own_broker.start()
            ensure_topics(own_broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
            wait_for(lambda: _relay(db, publisher), lambda n: n == 3, 60, "the relay to recover")
            with db() as session:
                assert session.scalar(select(func.count()).select_from(lifecycle_outbox)) == 0
        finally:
            publisher.close()
    assert len(read_topic(own_broker.bootstrap, STAGE_CHANGES, user, 3)) == 3


class SignallingPublisher(Publisher):
    """Sets `publishing` when a publish starts (and then waits for the broker as usual)."""

    def __init__(self, bootstrap: str, *, client_id: str, timeout_s: float) -> None:
        super().__init__(bootstrap, client_id=client_id, timeout_s=timeout_s)
        self.publishing = threading.Event()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.publishing.set()
        super().publish(messages)


def outbox_size(db: sessionmaker[Session]) -> int:
    with db() as session:
        return int(session.scalar(select(func.count()).select_from(lifecycle_outbox)) or 0)


def test_on_sqlite_a_relay_waiting_for_the_broker_blocks_no_other_writer(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    engine = build_engine(settings_for(own_broker.bootstrap, sqlite_url))
    publisher = SignallingPublisher(own_broker.bootstrap, client_id="test-outbox", timeout_s=5)
    failures: list[BaseException] = []
    user = f"{uuid.uuid4().hex[:8]}-relay"

    def relay_into_the_outage() -> None:
        try:
            relay_once(db, lifecycle_outbox, publisher)
        except BrokerUnavailable as exc:
            failures.append(exc)

    with sessions(sqlite_url) as db:
        try:
            feed(db, engine, [order(day(1), "o", 10, user=user)])
            own_broker.stop()
            waiting = threading.Thread(target=relay_into_the_outage)
            waiting.start()
            assert publisher.publishing.wait(10), "the relay should have started publishing"
            # The consumer writes its next batch while the relay still waits for the broker.
            feed(db, engine, [touch(day(2), user=f"{user}-2")])
            assert waiting.is_alive(), "the write should not have waited for the relay"
            waiting.join(30)
            assert failures, "the relay should have failed with the broker down"
            assert outbox_size(db) == 4  # nothing taken out
        finally:
            own_broker.start()
        ensure_topics(own_broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
        try:  # released on failure: the next round publishes every row, once
            wait_for(lambda: _relay(db, publisher), lambda n: n == 4, 60, "the relay to recover")
            assert outbox_size(db) == 0
        finally:
            publisher.close()
    assert len(read_topic(own_broker.bootstrap, STAGE_CHANGES, user, 4)) == 4


def test_on_sqlite_rows_claimed_by_a_relay_wait_for_its_lease(
    broker: EmbeddedBroker, sqlite_url: str
) -> None:
    engine = build_engine(settings_for(broker.bootstrap, sqlite_url))
    publisher = Publisher(broker.bootstrap, client_id="test-outbox", timeout_s=5)
    with sessions(sqlite_url) as db:
        try:
            feed(db, engine, [order(day(1), "o", 10, user=f"{uuid.uuid4().hex[:8]}-lease")])
            claimed = outbox_size(db)
            # Another relay claimed the rows and died before publishing them.
            until = datetime.now(UTC) + timedelta(minutes=5)
            with db.begin() as session:
                session.execute(update(lifecycle_outbox).values(claimed_until=until))
            assert relay_once(db, lifecycle_outbox, publisher) == 0
            with db.begin() as session:  # its lease ran out
                session.execute(
                    update(lifecycle_outbox).values(claimed_until=until - timedelta(minutes=10))
                )
            assert relay_once(db, lifecycle_outbox, publisher) == claimed
            assert outbox_size(db) == 0
        finally:
            publisher.close()


def _relay(db: object, publisher: Publisher) -> int:
    try:
        return relay_once(db, lifecycle_outbox, publisher)  # type: ignore[arg-type]
    except BrokerUnavailable:
        return -1


def test_api_answers_as_of_stages_reset_and_errors(broker: EmbeddedBroker, db_url: str) -> None:
    settings = settings_for(broker.bootstrap, db_url, run_consumer=False)
    engine = build_engine(settings)
    user = f"{uuid.uuid4().hex[:8]}-api"
    now = datetime.now(UTC).replace(microsecond=0)
    with sessions(db_url) as db:
        feed(
            db,
            engine,
            [
                touch(now - timedelta(days=300), user=user, channel="email"),
                order(now - timedelta(days=250), "o1", 30.0, user=user),
                order(now - timedelta(days=100), "o2", 30.0, user=user),
            ],
        )
    with TestClient(create_app(settings)) as api:
        current = api.get(f"/v1/customers/{user}", headers=READ).json()
        assert (current["stage"], current["status"]) == ("repeat", "at_risk")
        then = api.get(
            f"/v1/customers/{user}",
            params={"as_of": (now - timedelta(days=200)).isoformat()},
            headers=READ,
        ).json()
        assert (then["stage"], then["status"]) == ("first_purchase", "active")
        assert then["counters"] == {"events": 2, "orders": 1, "revenue": 30.0}
        before = api.get(
            f"/v1/customers/{user}",
            params={"as_of": (now - timedelta(days=400)).isoformat()},
            headers=READ,
        )
        assert before.status_code == 404

        stages = api.get(
            "/v1/stages",
            params={"since": (now - timedelta(days=260)).isoformat()},
            headers=READ,
        ).json()
        counts = {s["stage"]: s for s in stages["stages"]}
        assert list(counts) == ["visitor", "engaged", "first_purchase", "repeat", "loyal"]
        assert counts["repeat"]["customers"] >= 1 and counts["first_purchase"]["entered"] >= 1
        assert sum(stages["statuses"].values()) == sum(s["customers"] for s in stages["stages"])

        assert api.get(f"/v1/customers/{user}").status_code == 401
        assert api.get("/v1/customers/nobody-at-all", headers=READ).status_code == 404
        bad = api.get(f"/v1/customers/{user}", params={"as_of": "yesterday"}, headers=READ)
        assert bad.status_code == 400 and "as_of" in bad.text
        bad_range = api.get(
            "/v1/stages", params={"since": "2026-02-01", "until": "2026-01-01"}, headers=READ
        )
        assert bad_range.status_code == 400

        path = f"/v1/customers/{user}/reset"
        assert api.post(path, json={"stage": "visitor"}).status_code == 401
        assert api.post(path, json={"stage": "visitor"}, headers=READ).status_code == 403
        assert api.post(path, json={"stage": "vip"}, headers=ADMIN).status_code == 400
        assert (
            api.post(
                "/v1/customers/nobody/reset", json={"stage": "visitor"}, headers=ADMIN
            ).status_code
            == 404
        )
        reset = api.post(path, json={"stage": "visitor", "note": "test data"}, headers=ADMIN)
        assert reset.status_code == 200 and reset.json()["stage"] == "visitor"
        journey = api.get(f"/v1/customers/{user}/journey", headers=READ).json()["transitions"]
        assert [(t["kind"], t["from_stage"], t["to_stage"], t["note"]) for t in journey][-1] == (
            "reset",
            "repeat",
            "visitor",
            "test data",
        )


def test_cdnow_replay_gives_the_stage_counts_of_the_file(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    prefix = uuid.uuid4().hex[:6]
    rows = transactions()
    events = cdnow_events.touchpoints(rows, prefix=prefix)
    # Straight from the file: orders are lines, repeat = a second day, loyal = 5 orders or $500.
    days, lines, spend = defaultdict(set), Counter(), Counter()
    for t in rows:
        days[t.customer].add(t.day)
        lines[t.customer] += 1
        spend[t.customer] += t.dollars
    loyal = {c for c in days if lines[c] >= 5 or spend[c] >= 500 - 1e-9}
    repeat = {c for c in days if len(days[c]) >= 2} - loyal
    expected = {
        "first_purchase": len(days) - len(loyal) - len(repeat),
        "repeat": len(repeat),
        "loyal": len(loyal),
    }
    publish(own_broker.bootstrap, events)
    with lifecycle(own_broker.bootstrap, db_url) as (service, api):
        drain(len(events), service)
        stages = api.get("/v1/stages", headers=READ).json()["stages"]
    current = {s["stage"]: s["customers"] for s in stages}
    entered = {s["stage"]: s["entered"] for s in stages}
    assert {k: v for k, v in current.items() if v} == expected
    # A true funnel: everyone passed through visitor, engaged and first purchase; loyal customers
    # passed through repeat.
    assert entered["visitor"] == entered["engaged"] == entered["first_purchase"] == len(days)
    assert entered["repeat"] == len(repeat | loyal) and entered["loyal"] == len(loyal)
