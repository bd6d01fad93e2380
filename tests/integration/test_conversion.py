"""Per-channel conversion, the funnel and acquisition cohorts, in SQL on SQLite and PostgreSQL,
on journeys small enough to compute every number by hand (and, for random journeys, against the
pure attribution models)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle import conversion
from services.lifecycle.api import create_app
from services.lifecycle.attribution import MODELS, credit
from services.lifecycle.handlers import build_engine
from services.lifecycle.journey import decode_path
from services.lifecycle.tables import lifecycle_orders, lifecycle_transitions
from shared.migrate import downgrade, upgrade
from tests.support.lifecycle import day, feed, order, sessions, touch
from tests.support.pipeline import settings_for
from touchline.broker import EmbeddedBroker, free_port

ENGINE = build_engine(settings_for("unused:9092", "sqlite://"))
AUTH = {"Authorization": "Bearer test-read"}
DAY = 86_400.0


@pytest.fixture
def db(db_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(db_url) as factory:
        yield factory


@pytest.fixture
def api(broker: EmbeddedBroker, db_url: str) -> Iterator[TestClient]:
    settings = settings_for(broker.bootstrap, db_url, run_consumer=False)
    with TestClient(create_app(settings)) as client:
        yield client


def signed_up(at_day: float, user: str, channel: str) -> object:
    return touch(day(at_day), user=user, event="Signed Up", channel=channel)


def journeys(db: sessionmaker[Session]) -> None:
    """a: web visit d0, signs up by email d1, social d8, orders 100 on the web d15.
    b: signs up on the web d2, orders 50 d4.  c: signs up by email d3, never orders.
    d: signs up on the web d40 (outside the window [d0, d30)) and orders d41."""
    events = [
        touch(day(0), user="a", channel="web"),
        signed_up(1, "a", "email"),
        touch(day(8), user="a", channel="social"),
        order(day(15), "a1", 100.0, user="a"),
        signed_up(2, "b", "web"),
        order(day(4), "b1", 50.0, user="b"),
        signed_up(3, "c", "email"),
        signed_up(40, "d", "web"),
        order(day(41), "d1", 70.0, user="d"),
    ]
    feed(db, ENGINE, events)


def report(
    db: sessionmaker[Session],
    model: str,
    lookback: float = 30,
    *,
    step: tuple[str, str] = ("engaged", "first_purchase"),
    days: tuple[float, float] = (0, 30),
) -> conversion.Conversion:
    with db() as session:
        return conversion.conversion(
            session,
            from_stage=step[0],
            to_stage=step[1],
            model=model,
            since=day(days[0]),
            until=day(days[1]),
            lookback_days=lookback,
            recorded_lookback_days=30,
        )


def by_channel(result: conversion.Conversion) -> dict[str, conversion.ChannelConversion]:
    return {row.channel: row for row in result.channels}


def test_entered_converted_rates_and_times(db: sessionmaker[Session]) -> None:
    journeys(db)
    result = report(db, "linear")
    rows = by_channel(result)
    assert [r.channel for r in result.channels] == ["web", "email", "mobile", "social", "other"]
    assert (rows["email"].entered, rows["email"].converted, rows["email"].rate) == (2, 1, 0.5)
    assert (rows["web"].entered, rows["web"].converted, rows["web"].rate) == (1, 1, 1.0)
    assert (rows["social"].entered, rows["social"].rate) == (0, None)
    assert (result.total.entered, result.total.converted) == (3, 2)
    assert rows["email"].median_seconds == pytest.approx(14 * DAY)  # a: d1 -> d15
    assert rows["web"].median_seconds == pytest.approx(2 * DAY)  # b: d2 -> d4
    assert result.total.median_seconds == pytest.approx(8 * DAY)  # mean of the two middle ones
    assert result.total.p90_seconds == pytest.approx(14 * DAY)  # nearest rank: 2nd of 2


@pytest.mark.parametrize(
    ("model", "web", "email", "social"),
    [
        # a's path: web d0, email d1, social d8, web d15; b's path: web d2, web d4 (all web).
        ("first_touch", 2.0, 0.0, 0.0),
        ("last_touch", 2.0, 0.0, 0.0),
        ("linear", 1.5, 0.25, 0.25),
        ("position_based", 1.8, 0.1, 0.1),
        # a's ages 15, 14, 7, 0 days -> weights 2^(-15/7), 1/4, 1/2, 1
        (
            "time_decay",
            1 + (2 ** (-15 / 7) + 1) / (2 ** (-15 / 7) + 1.75),
            0.25 / (2 ** (-15 / 7) + 1.75),
            0.5 / (2 ** (-15 / 7) + 1.75),
        ),
    ],
)
def test_credit_per_model(
    db: sessionmaker[Session], model: str, web: float, email: float, social: float
) -> None:
    journeys(db)
    result = report(db, model)
    rows = by_channel(result)
    credited = {c: rows[c].credited_conversions for c in ("web", "email", "social")}
    assert credited == pytest.approx({"web": web, "email": email, "social": social})
    assert result.total.credited_conversions == pytest.approx(2.0)
    assert result.unattributed == pytest.approx(0.0)
    # Revenue: a's order is worth 100, b's 50; each channel gets its share of each.
    b_share = 1.0  # b's path is all web
    a_web = web - b_share
    assert rows["web"].credited_revenue == pytest.approx(100 * a_web + 50 * b_share)
    assert rows["email"].credited_revenue == pytest.approx(100 * email)


def test_a_shorter_lookback_drops_older_touches(db: sessionmaker[Session]) -> None:
    journeys(db)
    rows = by_channel(report(db, "linear", lookback=7))
    # a: only social d8 (exactly 7 days before) and web d15 remain; b: web d2 and d4.
    assert rows["social"].credited_conversions == pytest.approx(0.5)
    assert rows["web"].credited_conversions == pytest.approx(1.5)
    assert rows["email"].credited_conversions == pytest.approx(0.0)
    first = by_channel(report(db, "first_touch", lookback=7))
    assert first["social"].credited_conversions == pytest.approx(1.0)


def test_touches_older_than_the_recorded_lookback_get_nothing(db: sessionmaker[Session]) -> None:
    feed(
        db,
        ENGINE,
        [
            touch(day(0), user="e", channel="social"),  # 40 days before the order: outside
            signed_up(35, "e", "email"),
            order(day(40), "e1", 10.0, user="e"),
        ],
    )
    rows = by_channel(report(db, "first_touch", days=(30, 60)))
    assert rows["email"].credited_conversions == pytest.approx(1.0)
    assert rows["social"].credited_conversions == 0.0


def test_touches_at_the_same_instant_share_credit(db: sessionmaker[Session]) -> None:
    feed(
        db,
        ENGINE,
        [
            touch(day(5), user="f", channel="social"),
            touch(day(5), user="f", channel="email"),
            signed_up(6, "f", "web"),
            order(day(6), "f1", 20.0, user="f", channel="mobile"),
        ],
    )
    # f's path to first_purchase: email d5, social d5, web d6, mobile d6 (ties at both ends).
    rows = by_channel(report(db, "position_based", step=("visitor", "first_purchase")))
    # raw 0.4, 0.1, 0.1, 0.4 -> each simultaneous pair shares its 0.5
    assert {c: rows[c].credited_conversions for c in ("email", "social", "web", "mobile")} == (
        pytest.approx({"email": 0.25, "social": 0.25, "web": 0.25, "mobile": 0.25})
    )
    assert rows["mobile"].credited_revenue == pytest.approx(5.0)


@pytest.mark.parametrize("lookback", [12, 30])  # weighed in SQL / as stored when written
def test_random_journeys_match_the_pure_models(db: sessionmaker[Session], lookback: int) -> None:
    """Every model's SQL credit equals attribution.credit over the stored paths."""
    rng = random.Random(5)
    events = []
    channels = ["web", "email", "mobile", "social", "other"]
    for n in range(40):
        user = f"r{n}"
        for _ in range(rng.randint(1, 6)):
            at = day(rng.randint(0, 50)) + timedelta(hours=rng.choice([0, 0, 6]))
            events.append(touch(at, user=user, channel=rng.choice(channels)))
        if rng.random() < 0.8:
            events.append(signed_up(rng.randint(0, 40), user, rng.choice(channels)))
        if rng.random() < 0.6:
            events.append(order(day(rng.randint(10, 60)), f"o{n}", 10.0 + n, user=user))
    rng.shuffle(events)
    for start in range(0, len(events), 17):
        feed(db, ENGINE, events[start : start + 17])

    with db() as session:
        t = lifecycle_transitions.c
        purchases = session.execute(
            select(t.customer_id, t.at, t.message_id, t.touch_path).where(
                t.kind == "stage", t.to_stage == "first_purchase"
            )
        ).all()
        amounts = {
            (o.customer_id, o.message_id): o.amount
            for o in session.execute(select(lifecycle_orders)).all()
        }
        entered = {
            row.customer_id
            for row in session.execute(
                select(t.customer_id).where(t.kind == "stage", t.to_stage == "engaged")
            )
        }
        for model in MODELS:
            result = conversion.conversion(
                session,
                from_stage="engaged",
                to_stage="first_purchase",
                model=model,
                since=day(-10),
                until=day(100),
                lookback_days=lookback,
                recorded_lookback_days=30,
            )
            expected: dict[str, float] = defaultdict(float)
            revenue: dict[str, float] = defaultdict(float)
            for p in purchases:
                if p.customer_id not in entered:
                    continue
                path = decode_path(p.touch_path)
                window = [x for x in path if p.at - x.at <= timedelta(lookback)]
                for channel, share in credit(model, window, p.at).items():
                    expected[channel] += share
                    revenue[channel] += share * amounts[(p.customer_id, p.message_id)]
            rows = by_channel(result)
            for channel in channels:
                assert rows[channel].credited_conversions == pytest.approx(expected[channel]), (
                    model,
                    channel,
                )
                assert rows[channel].credited_revenue == pytest.approx(revenue[channel])


def test_cohorts_by_week_and_first_touch_channel(db: sessionmaker[Session]) -> None:
    journeys(db)  # T0 = Thursday 2026-01-01: week of Monday 2025-12-29
    with db() as session:
        found = conversion.cohorts(session, since=day(-7), until=day(60))
    cohorts = {(c.week, c.channel): c for c in found}
    web = cohorts[("2025-12-29", "web")]  # a (web visit d0) and b (web sign-up d2)
    assert web.acquired == 2
    assert web.reached == {"visitor": 2, "engaged": 2, "first_purchase": 2}
    email = cohorts[("2025-12-29", "email")]  # c
    assert (email.acquired, email.reached) == (1, {"visitor": 1, "engaged": 1})
    late = cohorts[("2026-02-09", "web")]  # d: d40 = 2026-02-10, a Tuesday
    assert late.acquired == 1 and late.reached["first_purchase"] == 1


def test_conversion_api(db: sessionmaker[Session], api: TestClient) -> None:
    journeys(db)
    window = {"since": day(0).isoformat(), "until": day(30).isoformat()}
    answer = api.get(
        "/v1/conversion",
        params={"from": "engaged", "to": "first_purchase", "model": "position_based", **window},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["lookback_days"]) == ("position_based", 30)
    web = next(c for c in body["channels"] if c["channel"] == "web")
    assert web["credited_conversions"] == pytest.approx(1.8)
    assert body["total"] | {"credited_conversions": 2.0} == body["total"]
    assert (body["total"]["entered"], body["total"]["converted"]) == (3, 2)

    funnel = api.get("/v1/conversion/funnel", params=window, headers=AUTH).json()
    assert [(s["from_stage"], s["to_stage"]) for s in funnel["steps"]] == [
        ("visitor", "engaged"),
        ("engaged", "first_purchase"),
        ("first_purchase", "repeat"),
        ("repeat", "loyal"),
    ]
    assert funnel["steps"][1]["total"] == body["total"] | {
        "credited_conversions": pytest.approx(2.0),
        "credited_revenue": pytest.approx(150.0),
    }
    cohorts = api.get(
        "/v1/conversion/cohorts", params={"since": day(-7).isoformat()}, headers=AUTH
    ).json()
    assert cohorts["stages"][0] == "visitor" and len(cohorts["cohorts"]) == 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "engaged", "to": "visitor"}, "`to` must be a stage after 'engaged'"),
        ({"from": "nope", "to": "loyal"}, "unknown stage 'nope'"),
        ({"from": "engaged", "to": "loyal", "model": "data_driven"}, "unknown model"),
        ({"from": "engaged", "to": "loyal", "lookback_days": "31"}, "at most 30"),
        ({"from": "engaged", "to": "loyal", "lookback_days": "0"}, "lookback_days"),
        ({"to": "loyal"}, "from"),
        (
            {"from": "engaged", "to": "loyal", "since": "2026-02-01", "until": "2026-01-01"},
            "`since` must be before `until`",
        ),
    ],
)
def test_bad_parameters_get_400(api: TestClient, params: dict[str, str], message: str) -> None:
    answer = api.get("/v1/conversion", params=params, headers=AUTH)
    assert answer.status_code == 400 and message in answer.json()["detail"], answer.text


def test_conversion_needs_the_read_token(api: TestClient) -> None:
    for route in ("/v1/conversion?from=engaged&to=loyal", "/v1/conversion/funnel"):
        assert api.get(route).status_code == 401
        assert api.get(route, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_scoring_panels_answer_502_when_scoring_is_down(
    broker: EmbeddedBroker, sqlite_url: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(broker.bootstrap, sqlite_url, run_consumer=False, scoring_url=closed)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/v1/scoring/segments", headers=AUTH)
        assert answer.status_code == 502
        assert "scoring service unreachable" in answer.json()["detail"]
        assert client.get("/v1/scoring/model/refit", headers=AUTH).status_code == 400  # not proxied
        assert client.get("/v1/scoring/segments").status_code == 401


def test_the_migration_fills_the_funnel_from_stored_journeys(db_url: str) -> None:
    """Downgrade below the funnel tables and upgrade again: the same conversion numbers."""
    with sessions(db_url) as factory:
        journeys(factory)
        before = [report(factory, model) for model in MODELS]
    downgrade(db_url, "0003")
    upgrade(db_url)
    with sessions(db_url) as factory:
        assert [report(factory, model) for model in MODELS] == before
        assert before[0].total.converted == 2
