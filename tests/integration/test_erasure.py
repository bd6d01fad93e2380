"""GDPR erasure through the real broker and both databases: `DELETE /v1/customers/{id}` erases
the customer and every merged id from lifecycle and scoring (processed-message records
included), ingest then rejects their events, late events are dropped, nothing about them is left
in any table, erasing again is harmless, and an unreadable erasure is dead-lettered."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.api import SUPPRESSED
from services.ingest.api import create_app as ingest_app
from services.lifecycle.api import create_app as lifecycle_app
from services.lifecycle.consumer import WORKERS
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_ids, lifecycle_outbox
from services.scoring import handlers as scoring_handlers
from services.scoring.api import create_app as scoring_app
from services.scoring.tables import scoring_customers, scoring_outbox, scoring_population
from services.scoring.workers import WORKERS as SCORING_WORKERS
from shared.db import make_engine, metadata, processed_messages
from shared.events import ERASURES, Erasure, all_topics, dlq
from shared.kafka import OutgoingMessage, Publisher, ensure_topics
from shared.privacy import erasure, id_hash, suppressions
from shared.runtime import ConsumerService
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support.lifecycle import day, identify, order, touch
from tests.support.pipeline import (
    publish,
    read_topic,
    settings_for,
    wait_for,
    wait_until_committed,
)
from touchline.broker import EmbeddedBroker

ADMIN = {"Authorization": "Bearer test-admin"}
READ = {"Authorization": "Bearer test-read"}
WRITE = ("test-key", "")


class Stack:
    """Lifecycle and scoring consumers (with their workers) and the three HTTP APIs."""

    def __init__(self, bootstrap: str, db_url: str, stack: ExitStack) -> None:
        settings = settings_for(bootstrap, db_url)
        api_settings = settings_for(bootstrap, db_url, run_consumer=False)
        self.db_url = db_url
        self.bootstrap = bootstrap
        self.lifecycle = ConsumerService(
            settings, name="lifecycle", handler=build_engine(settings).apply, workers=WORKERS
        )
        self.scoring = ConsumerService(
            settings,
            name="scoring",
            handler=scoring_handlers.apply,
            workers=SCORING_WORKERS,
        )
        for service in (self.lifecycle, self.scoring):
            service.start()
            stack.callback(service.stop)
        self.ingest = stack.enter_context(TestClient(ingest_app(api_settings)))
        self.lifecycle_api = stack.enter_context(TestClient(lifecycle_app(api_settings)))
        self.scoring_api = stack.enter_context(TestClient(scoring_app(api_settings)))

    def finished(self) -> tuple[int, int]:
        """Events each consumer has finished (applied, duplicate or suppressed)."""
        return tuple(  # type: ignore[return-value]
            s.loop.stats.applied + s.loop.stats.duplicates + s.loop.stats.suppressed
            if s.loop
            else 0
            for s in (self.lifecycle, self.scoring)
        )

    def drain(self, total: int) -> None:
        wait_for(self.finished, lambda n: min(n) >= total, 60, f"{total} events in both")
        # A replay of what was applied but not committed would count as suppressed after an
        # erasure: wait for both commits too.
        wait_until_committed(self.bootstrap, [self.lifecycle.name, self.scoring.name], 60)


@contextmanager
def running(broker: EmbeddedBroker, db_url: str) -> Iterator[Stack]:
    with ExitStack() as stack:
        yield Stack(broker.bootstrap, db_url, stack)


@contextmanager
def one_buyer(broker: EmbeddedBroker, db_url: str) -> Iterator[tuple[Stack, str]]:
    """The stack, after both consumers applied one order of a new user."""
    user = f"{uuid.uuid4().hex[:8]}-user"
    with running(broker, db_url) as stack:
        publish(broker.bootstrap, [order(day(2), "o1", 40.0, user=user)])
        stack.drain(1)
        yield stack, user


def everything(db_url: str) -> str:
    """Every row of every table, as text."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(tuple(row))
                for table in metadata.sorted_tables
                for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()


def scalar(db_url: str, query: Any) -> Any:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar()
    finally:
        engine.dispose()


def outbox_empty(db_url: str) -> bool:
    return not any(
        scalar(db_url, select(func.count()).select_from(box))
        for box in (lifecycle_outbox, scoring_outbox)
    )


def test_erasure_leaves_nothing_and_suppresses_every_merged_id(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    user, anon, email = f"{run}-user", f"{run}-anon", f"{run}@example.com"
    bystander = f"{run}-bystander"
    events = [
        touch(day(0), anon=anon, channel="social"),
        touch(day(1), anon=anon, event="Signed Up"),
        identify(day(2), user, anon, email=email),
        order(day(3), "o1", 40.0, user=user),
        order(day(30), "o2", 60.0, user=user, channel="email"),
        order(day(4), "b1", 25.0, user=bystander),
        order(day(9), "b2", 35.0, user=bystander),
    ]
    with running(own_broker, db_url) as stack:
        publish(own_broker.bootstrap, events)
        stack.drain(len(events))
        assert run in everything(db_url)
        hashes = [id_hash(user), id_hash(anon)]
        p = processed_messages.c
        recorded = select(func.count()).where(p.customer_hash.in_(hashes))
        assert scalar(db_url, recorded) == 2 * 5  # both consumers recorded their 5 events

        # Only the admin token may erase.
        assert stack.lifecycle_api.delete(f"/v1/customers/{anon}").status_code == 401
        assert stack.lifecycle_api.delete(f"/v1/customers/{anon}", headers=READ).status_code == 403
        assert stack.scoring_api.delete(f"/v1/customers/{anon}", headers=READ).status_code == 403

        response = stack.lifecycle_api.delete(f"/v1/customers/{anon}", headers=ADMIN)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["ids"] == sorted([user, anon])
        assert report["published"] is True
        deleted = report["deleted_rows"]
        assert deleted["lifecycle_customers"] == 1
        assert deleted["lifecycle_orders"] == 2
        assert deleted["lifecycle_ids"] == 2
        assert deleted["processed_messages"] == 5
        assert deleted["lifecycle_transitions"] >= 4  # visitor, engaged, first purchase, repeat

        # Scoring erases both ids once the erasure reaches it through the outbox and the topic.
        c = scoring_customers.c
        left = select(func.count()).where(c.customer_id.in_([user, anon]))
        wait_for(lambda: scalar(db_url, left), lambda n: n == 0, 30, "scoring to erase")
        wait_for(lambda: outbox_empty(db_url), bool, 30, "the outbox to be relayed")
        assert scalar(db_url, recorded) == 0
        s = suppressions.c
        listed = select(func.count()).where(s.id_hash.in_(hashes))
        wait_for(lambda: scalar(db_url, listed), lambda n: n == 4, 30, "both services to suppress")

        # Ingest rejects their events with a reason (once it has read the erasure) and records
        # nothing of them; other customers' events still go through.
        accepted_before_ingest_knew = 0

        def track(customer: str) -> Any:
            nonlocal accepted_before_ingest_knew
            call = {"userId": customer, "event": "Product Viewed", "traits": {"email": email}}
            response = stack.ingest.post("/v1/track", json=call, auth=WRITE)
            accepted_before_ingest_knew += response.status_code == 200
            return response

        refused = wait_for(lambda: track(user), lambda r: r.status_code == 403, 30, "ingest")
        assert refused.json()["detail"] == SUPPRESSED
        batch = stack.ingest.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "page", "anonymousId": anon, "name": "Home"},
                    {"type": "track", "userId": bystander, "event": "Product Viewed"},
                ]
            },
            auth=WRITE,
        ).json()
        assert batch["accepted"] == 1
        assert batch["rejected"] == [{"index": 0, "messageId": None, "reason": SUPPRESSED}]

        # Events already on their way (sent before the erasure, read after it) are dropped.
        late = [order(day(40), "o3", 80.0, user=user), touch(day(41), anon=anon)]
        publish(own_broker.bootstrap, late)
        # Calls ingest took before it had read the erasure are dropped by the consumers too.
        dropped = accepted_before_ingest_knew + len(late)
        stack.drain(len(events) + 1 + dropped)  # the bystander's view from the batch too
        assert stack.lifecycle.loop and stack.lifecycle.loop.stats.suppressed == dropped
        assert stack.scoring.loop and stack.scoring.loop.stats.suppressed == dropped

        rows = everything(db_url)
        for trace in (user, anon, email):
            assert trace not in rows
        assert bystander in rows  # only the erased customer went
        # The RFM population lost the erased buyer: it counts the one buyer left.
        pop = scoring_population.c
        frequency = select(func.sum(pop.customers)).where(pop.dimension == "f")
        assert scalar(db_url, frequency) == 1

        again = stack.lifecycle_api.delete(f"/v1/customers/{user}", headers=ADMIN)
        assert again.status_code == 200
        assert again.json()["ids"] == [user]
        assert not any(again.json()["deleted_rows"].values())


def test_scoring_delete_reaches_lifecycle_which_passes_the_merged_ids_back(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    user, anon = f"{run}-user", f"{run}-anon"
    events = [
        touch(day(0), anon=anon, channel="social"),
        identify(day(1), user, anon),
        order(day(2), "o1", 40.0, user=user),
    ]
    with running(own_broker, sqlite_url) as stack:
        publish(own_broker.bootstrap, events)
        stack.drain(len(events))
        response = stack.scoring_api.delete(f"/v1/customers/{anon}", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["ids"] == [anon]
        assert response.json()["published"] is True
        # Lifecycle erases the customer the anonymous id was merged into, and passes the
        # user id on, so scoring erases the buyer it only knew by user id.
        wait_for(lambda: user in everything(sqlite_url), lambda found: not found, 30, "erasure")
        assert anon not in everything(sqlite_url)


def test_scoring_erasure_waits_in_the_outbox_while_the_broker_is_down_and_goes_out_after(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    with one_buyer(own_broker, sqlite_url) as (stack, user):
        own_broker.stop()
        try:
            down = stack.scoring_api.delete(f"/v1/customers/{user}", headers=ADMIN)
            assert down.status_code == 200, down.text
            assert down.json()["published"] is True
            mine = scoring_customers.c.customer_id == user
            assert not scalar(sqlite_url, select(func.count()).where(mine))
            # Committed with the local erasure, and still queued: the relay cannot publish it.
            queued = scalar(sqlite_url, select(scoring_outbox.c.payload))
            assert Erasure.model_validate_json(queued).ids == [user]
            known = lifecycle_ids.c.id == user
            assert scalar(sqlite_url, select(func.count()).select_from(lifecycle_ids).where(known))
        finally:
            own_broker.start()
            # the memory-only broker came back without its topics
            ensure_topics(own_broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
        # The relay publishes it once the broker is back; lifecycle erases the customer too.
        wait_for(lambda: outbox_empty(sqlite_url), bool, 60, "the outbox to be relayed")
        wait_for(lambda: user in everything(sqlite_url), lambda found: not found, 60, "erasure")


def test_an_unreadable_erasure_is_dead_lettered_and_the_next_one_applied(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    with one_buyer(own_broker, sqlite_url) as (_stack, user):
        publisher = Publisher(own_broker.bootstrap, client_id="test", timeout_s=10)
        try:
            poison = OutgoingMessage(ERASURES, user, f'{{"ids": "{user}-not-a-list"}}'.encode())
            publisher.publish([poison, erasure([user], origin="test")])
        finally:
            publisher.close()
        # Both services dead-letter the poison message (with the error) and erase the user.
        dead = read_topic(own_broker.bootstrap, dlq(ERASURES), f"{user}-not-a-list", 2)
        consumers = sorted(orjson.loads(r.value)["consumer"] for r in dead)
        assert consumers == ["lifecycle-erasures", "scoring-erasures"]
        assert all("undecodable" in orjson.loads(r.value)["error"] for r in dead)
        wait_for(lambda: user in everything(sqlite_url), lambda found: not found, 30, "erasure")
