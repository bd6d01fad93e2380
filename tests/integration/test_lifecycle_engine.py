"""The lifecycle engine on real SQLite and PostgreSQL (migrated), batch by batch as the consumer
loop feeds it: identity merges in every order, purchases, refunds, win-backs, resets, journeys
with touch paths, and the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle.api import create_app
from services.lifecycle.handlers import build_engine
from services.lifecycle.stages import StageModelError
from services.lifecycle.tables import lifecycle_outbox
from shared.events import StageChange
from tests.support.lifecycle import (
    day,
    derived_funnel,
    feed,
    identify,
    order,
    refund,
    sessions,
    state,
    touch,
)
from tests.support.pipeline import settings_for

ENGINE = build_engine(settings_for("unused:9092", "sqlite://"))


@pytest.fixture
def db(db_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(db_url) as factory:
        yield factory


def ids() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"user-{run}", f"anon-{run}"


def stages(transitions: list[tuple]) -> list[tuple[str, object]]:  # type: ignore[type-arg]
    return [(t[2], t[3]) for t in transitions if t[0] == "stage"]


def read(db: sessionmaker[Session], any_id: str) -> dict:  # type: ignore[type-arg]
    with db() as session:
        result = state(session, any_id)
        assert result is not None, any_id
        # conversion's funnel rows always equal what the stored journey implies
        assert result["funnel"] == derived_funnel(session, result["customer_id"])
    return result


def test_anonymous_browsing_then_identify_then_purchase(db: sessionmaker[Session]) -> None:
    user, anon = ids()
    feed(db, ENGINE, [touch(day(0), anon=anon, channel="social"), touch(day(1), anon=anon)])
    assert read(db, anon)["stage"] == "visitor"
    feed(db, ENGINE, [identify(day(2), user, anon, email="a@example.com")])
    feed(db, ENGINE, [order(day(3), "o1", 40.0, user=user)])
    customer = read(db, anon)  # the merged-away id finds the canonical customer
    assert customer["customer_id"] == user and customer["known"]
    assert customer["ids"] == sorted([user, anon])
    assert customer["stage"] == "first_purchase" and customer["stage_entered_at"] == day(3)
    assert (customer["first_touch_channel"], customer["first_touch_at"]) == ("social", day(0))
    assert customer["event_count"] == 4 and customer["order_count"] == 1
    assert stages(customer["transitions"]) == [
        ("visitor", day(0)),
        ("engaged", day(2)),
        ("first_purchase", day(3)),
    ]
    first_purchase = next(t for t in customer["transitions"] if t[2] == "first_purchase")
    path = orjson.loads(first_purchase[6])
    assert [channel for _, channel in path] == ["social", "web", "web", "web"]


def test_identify_before_the_anonymous_events(db: sessionmaker[Session]) -> None:
    user, anon = ids()
    feed(db, ENGINE, [identify(day(2), user, anon)])
    feed(db, ENGINE, [touch(day(0), anon=anon, channel="email"), order(day(3), "o", 5, anon=anon)])
    customer = read(db, user)
    assert customer["customer_id"] == user
    assert customer["first_touch_channel"] == "email" and customer["stage"] == "first_purchase"
    assert stages(customer["transitions"])[0] == ("visitor", day(0))


def test_same_batch_in_either_order_gives_the_same_customer(db: sessionmaker[Session]) -> None:
    results = []
    for reverse in (False, True):
        user, anon = ids()
        batch = [
            touch(day(0), anon=anon, channel="social", message_id=f"a-{reverse}-{user}"),
            identify(day(1), user, anon),
            order(day(2), "o", 60, user=user),
        ]
        feed(db, ENGINE, batch[::-1] if reverse else batch)
        customer = read(db, anon)
        results.append(
            (customer["stage"], customer["first_touch_channel"], customer["event_count"])
        )
    assert results[0] == results[1] == ("first_purchase", "social", 3)


def test_alias_merges_the_previous_id(db: sessionmaker[Session]) -> None:
    user, anon = ids()
    feed(db, ENGINE, [touch(day(0), anon=anon, event="Signed Up")])
    feed(db, ENGINE, [touch(day(1), user=user, kind="alias", previous=anon)])
    customer = read(db, anon)
    assert customer["customer_id"] == user and customer["stage"] == "engaged"
    assert customer["engaged_at"] == day(0)


def test_two_identified_profiles_are_never_merged(db: sessionmaker[Session]) -> None:
    one, anon = ids()
    two = one + "-other"
    feed(db, ENGINE, [identify(day(0), one, anon), touch(day(0), user=two)])
    feed(db, ENGINE, [identify(day(1), two, anon)])  # a shared device: the second user logs in
    feed(db, ENGINE, [touch(day(2), user=two, kind="alias", previous=one)])
    assert read(db, anon)["customer_id"] == one
    assert read(db, two)["customer_id"] == two
    assert read(db, one)["ids"] == sorted([one, anon])


def test_refund_subtracts_revenue_but_does_not_undo_a_stage(db: sessionmaker[Session]) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(1), "big", 600, user=user)])
    feed(db, ENGINE, [refund(day(2), "big", 600, user=user)])
    customer = read(db, user)
    assert customer["revenue"] == 0 and customer["stage"] == "loyal"
    # A refund before the threshold is crossed counts: 300 - 300 + 450 stays under 500.
    late, _ = ids()
    feed(db, ENGINE, [order(day(1), "a", 300, user=late), refund(day(2), "a", 300, user=late)])
    feed(db, ENGINE, [order(day(3), "b", 450, user=late)])
    assert read(db, late)["stage"] == "repeat"


def test_the_same_order_id_twice_is_one_order(db: sessionmaker[Session]) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(1), "o", 10, user=user), order(day(4), "o", 10, user=user)])
    customer = read(db, user)
    assert customer["order_count"] == 1 and customer["stage"] == "first_purchase"


def test_reactivation_after_200_days(db: sessionmaker[Session]) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(0), "o1", 20, user=user)])
    feed(db, ENGINE, [order(day(200), "o2", 20, user=user)])
    customer = read(db, user)
    wins = [t for t in customer["transitions"] if t[0] == "reactivated"]
    assert [(t[1], t[2], t[3]) for t in wins] == [("lapsed", "active", day(200))]
    assert customer["stage"] == "repeat"
    # A late order in the gap means there was no lapse: the win-back is withdrawn.
    feed(db, ENGINE, [order(day(100), "o3", 20, user=user)])
    assert not [t for t in read(db, user)["transitions"] if t[0] == "reactivated"]


def test_a_late_touch_moves_the_entry_and_joins_the_path(db: sessionmaker[Session]) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(10), "o", 20, user=user)])
    feed(db, ENGINE, [touch(day(5), user=user, channel="email")])
    customer = read(db, user)
    assert stages(customer["transitions"])[0] == ("visitor", day(5))
    buy = next(t for t in customer["transitions"] if t[2] == "first_purchase")
    assert [c for _, c in orjson.loads(buy[6])] == ["email", "web"]


def test_every_new_transition_is_queued_for_the_topic(db: sessionmaker[Session]) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(1), "o", 20, user=user)])
    with db() as session:
        rows = session.execute(
            select(lifecycle_outbox.c.payload).where(lifecycle_outbox.c.key == user)
        ).scalars()
        changes = [StageChange.model_validate_json(r) for r in rows]  # the topic's schema
    assert sorted(c.to_stage for c in changes) == ["engaged", "first_purchase", "visitor"]
    assert {c.message_id for c in changes} == {read(db, user)["first_touch_message"]}
    assert {c.customer_id for c in changes} == {user}


def test_admin_reset_is_audited_and_rules_apply_again_after_it(
    db: sessionmaker[Session],
) -> None:
    user, _ = ids()
    feed(db, ENGINE, [order(day(1), "o", 20, user=user), order(day(2), "p", 20, user=user)])
    with db.begin() as session:
        ENGINE.reset(session, user, "visitor", "test orders")
    customer = read(db, user)
    assert customer["stage"] == "visitor"
    resets = [t for t in customer["transitions"] if t[0] == "reset"]
    assert [(t[1], t[2]) for t in resets] == [("repeat", "visitor")]
    assert len(stages(customer["transitions"])) == 4  # the history before the reset stays
    later = customer["stage_entered_at"]
    feed(db, ENGINE, [order(later + (day(1) - day(0)), "q", 20, user=user)])
    assert read(db, user)["stage"] == "first_purchase"


def test_a_custom_stage_model_file_drives_the_engine(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    model = tmp_path / "stages.toml"
    model.write_text(
        '[[stage]]\nname = "prospect"\nany_touch = true\n'
        '[[stage]]\nname = "trial"\nevents = ["Trial Started"]\n'
        '[[stage]]\nname = "customer"\nmin_orders = 1\n'
        '[[stage]]\nname = "champion"\nmin_orders = 3\n'
    )
    engine = build_engine(settings_for("unused:9092", "sqlite://", stage_model=model))
    user, _ = ids()
    feed(db, engine, [touch(day(0), user=user), touch(day(1), user=user, event="Trial Started")])
    assert read(db, user)["stage"] == "trial"
    feed(db, engine, [order(day(n), f"o{n}", 10, user=user) for n in (2, 3, 4)])
    customer = read(db, user)
    assert customer["stage"] == "champion"
    assert [s for s, _ in stages(customer["transitions"])] == [
        "prospect",
        "trial",
        "customer",
        "champion",
    ]


def test_a_bad_stage_model_file_stops_the_service_at_start(tmp_path: Path) -> None:
    model = tmp_path / "stages.toml"
    model.write_text('[[stage]]\nname = "prospect"\nevents = ["Signed Up"]\n')
    settings = settings_for("unused:9092", "sqlite://", stage_model=model)
    with pytest.raises(StageModelError, match="needs any_touch = true"):
        create_app(settings)
    with pytest.raises(StageModelError, match="cannot read"):
        build_engine(settings_for("unused:9092", "sqlite://", stage_model=tmp_path / "none"))
