"""Crash consistency at scale: the lifecycle and scoring consumers, SIGKILLed at random points
several times during a replay of 50k+ events and restarted, end with every table equal to an
uninterrupted run of the same events (stages, transitions, funnel, counters, RFM population)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, func, select

from shared.db import make_engine, processed_messages
from shared.events import all_topics
from shared.kafka import ensure_topics
from shared.migrate import upgrade
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support.pipeline import publish, settings_env, wait_for
from tests.support.traffic import mixed_traffic
from touchline.broker import EmbeddedBroker, free_port

CONSUMERS = {"lifecycle": "services.lifecycle.consumer", "scoring": "services.scoring.consumer"}
KILLS = 3  # per consumer
# Written when a message is processed (wall clock) or named by a random id: not state.
NOT_STATE = {"updated_at", "recorded_at", "processed_at", "suppressed_at", "created_at"}
NOT_COMPARED = {"lifecycle_outbox", "scoring_models", "alembic_version"}


@contextmanager
def own_broker_at(log: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port(), log)
    broker.start()
    try:
        ensure_topics(broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
        yield broker
    finally:
        broker.stop()


def start(name: str, bootstrap: str, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(bootstrap, url, TOUCHLINE_CONSUMER_BATCH_SIZE="500")}
    return subprocess.Popen(
        [sys.executable, "-m", CONSUMERS[name]], env=env, stderr=subprocess.DEVNULL
    )


def processed(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(processed_messages.c.consumer == name)
        return int(conn.execute(query).scalar_one())


def replay(bootstrap: str, url: str, distinct: int, kills: dict[str, list[int]]) -> list[str]:
    """Run both consumers until each has processed `distinct` messages, SIGKILLing one when its
    processed count first reaches each of its kill points; what happened, for the failure report."""
    engine = make_engine(url)
    procs = {name: start(name, bootstrap, url) for name in CONSUMERS}
    pending = {name: sorted(points) for name, points in kills.items()}
    log: list[str] = []

    def step() -> dict[str, int]:
        done = {name: processed(engine, name) for name in CONSUMERS}
        for name, points in pending.items():
            if points and done[name] >= points[0]:
                procs[name].send_signal(signal.SIGKILL)
                procs[name].wait(10)
                log.append(f"killed {name} at {done[name]} processed (point {points.pop(0)})")
                procs[name] = start(name, bootstrap, url)
        return done

    try:
        wait_for(
            step,
            lambda done: all(n >= distinct for n in done.values()) and not any(pending.values()),
            240,
            f"both consumers to process {distinct} messages",
        )
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(30)
        engine.dispose()
    return log


def state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (sorted), without the columns that record when or under which random
    id a row was written."""
    engine = make_engine(url)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    schema = MetaData()
    schema.reflect(engine)
    try:
        with engine.connect() as conn:
            for table in schema.sorted_tables:
                if table.name in NOT_COMPARED:
                    continue
                columns = [c for c in table.columns if c.name not in NOT_STATE]
                if table.name == "lifecycle_transitions":
                    columns = [c for c in columns if c.name != "id"]
                query = select(*columns)
                if table.name == "scoring_population":
                    # A value nobody has any more counts 0 or has no row: which values passed
                    # through depends on where batches ended, the live population does not.
                    query = query.where(table.c.customers != 0)
                rows = conn.execute(query).all()
                tables[table.name] = sorted((tuple(r) for r in rows), key=repr)
    finally:
        engine.dispose()
    return tables


def test_sigkill_at_random_points_during_a_50k_replay_ends_in_the_uninterrupted_state(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1_000_000)
    events = mixed_traffic(people=9_000, seed=seed)
    distinct = len({e.message_id for e in events})
    assert distinct >= 50_000
    rng = random.Random(seed)
    kills = {name: rng.sample(range(1_000, distinct - 1_000), KILLS) for name in CONSUMERS}

    urls = {run: f"sqlite:///{tmp_path / run}.db" for run in ("calm", "crashing")}
    for url in urls.values():
        upgrade(url)
    with (
        own_broker_at(tmp_path / "calm-broker.log") as calm,
        own_broker_at(tmp_path / "crashing-broker.log") as crashing,
    ):
        publish(calm.bootstrap, events)
        publish(crashing.bootstrap, events)
        replay(calm.bootstrap, urls["calm"], distinct, {name: [] for name in CONSUMERS})
        log = replay(crashing.bootstrap, urls["crashing"], distinct, kills)

    expected, actual = state(urls["calm"]), state(urls["crashing"])
    assert expected["lifecycle_customers"] and expected["scoring_population"]
    for table, rows in expected.items():
        missing = set(rows) - set(actual[table])
        extra = set(actual[table]) - set(rows)
        assert not missing and not extra, (
            f"seed {seed}, {log}: {table} differs: {len(missing)} rows only in the uninterrupted "
            f"run (e.g. {sorted(missing, key=repr)[:2]}), {len(extra)} only after the kills "
            f"(e.g. {sorted(extra, key=repr)[:2]})"
        )
        assert sorted(rows, key=repr) == actual[table], f"seed {seed}: {table} row counts differ"
