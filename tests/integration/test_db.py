"""DB plumbing the consumers' speed rests on: `execute_many` writes what SQLAlchemy's executemany
would (on both databases), `mark_processed` returns exactly the new keys, and the background
`Checkpointer` keeps a SQLite WAL copied back and short."""

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import bindparam, select, update

from services.lifecycle.tables import lifecycle_touches
from shared.db import (
    BACKGROUND_AUTOCHECKPOINT_PAGES,
    Checkpointer,
    execute_many,
    forget_processed,
    make_engine,
    make_session_factory,
    mark_processed,
    processed_messages,
    upsert_into,
)


def test_execute_many_inserts_upserts_and_updates_with_converted_values(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    t = lifecycle_touches.c
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    other_zone = at.astimezone(timezone(timedelta(hours=-5)))  # the same instant
    rows = [
        {"customer_id": "a", "at": at, "message_id": "m1", "channel": "web"},
        {"customer_id": "b", "at": other_zone, "message_id": "m2", "channel": "email"},
    ]
    try:
        with sessions.begin() as session:
            insert = upsert_into(session, lifecycle_touches).on_conflict_do_nothing()
            execute_many(session, insert, rows)
            execute_many(session, insert, rows[:1])  # a conflict: ignored
            execute_many(session, insert, [])
            execute_many(
                session,
                update(lifecycle_touches)
                .where(t.message_id == bindparam("message"))
                .values(channel=bindparam("new_channel")),
                [{"message": "m2", "new_channel": "social"}],
            )
        with sessions() as session:
            stored = session.execute(
                select(t.customer_id, t.at, t.channel).order_by(t.customer_id)
            ).all()
        assert [tuple(r) for r in stored] == [("a", at, "web"), ("b", at, "social")]
        assert all(r.at.tzinfo is UTC for r in stored)
    finally:
        engine.dispose()


def test_mark_processed_returns_only_new_keys_and_stores_each_once(db_url: str) -> None:
    """More keys than one multi-row insert takes (1,000 on SQLite), some already processed, some
    twice in the batch, the same ids under another scope and under another consumer (new there)."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    p = processed_messages.c
    try:
        with sessions.begin() as session:
            first = mark_processed(
                session, "c1", [(f"m{i}", "s", f"h{i}") for i in range(0, 2500, 2)]
            )
        assert first == {(f"m{i}", "s") for i in range(0, 2500, 2)}
        batch = [(f"m{i}", "s", f"h{i}") for i in range(2500)]
        batch += [("m1", "s", "h1"), ("m3", "s", "h3"), ("m0", "t", "h0")]
        with sessions.begin() as session:
            again = mark_processed(session, "c1", batch)
            other = mark_processed(session, "c2", [("m0", "s", "h0")])
        assert again == {(f"m{i}", "s") for i in range(1, 2500, 2)} | {("m0", "t")}
        assert other == {("m0", "s")}
        with sessions() as session:
            rows = session.execute(select(p.consumer, p.message_id, p.scope, p.customer_hash)).all()
            at = session.execute(select(p.processed_at).limit(1)).scalar_one()
        assert sorted(tuple(r) for r in rows) == sorted(
            [("c1", f"m{i}", "s", f"h{i}") for i in range(2500)]
            + [("c1", "m0", "t", "h0"), ("c2", "m0", "s", "h0")]
        )
        assert at.tzinfo is UTC and abs(datetime.now(UTC) - at) < timedelta(minutes=5)
        with sessions.begin() as session:
            forget_processed(session, "c1", [("m0", "t"), ("m2", "s")])
        with sessions() as session:
            left = session.execute(
                select(p.message_id, p.scope).where(
                    p.consumer == "c1", p.message_id.in_(["m0", "m2"])
                )
            ).all()
        assert sorted(tuple(r) for r in left) == [("m0", "s")]
    finally:
        engine.dispose()


def test_background_checkpoints_copy_the_wal_that_commits_no_longer_copy(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, background_checkpoints=True)
    sessions = make_session_factory(engine)
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == BACKGROUND_AUTOCHECKPOINT_PAGES  # commits leave it to the Checkpointer
        before = database.stat().st_size
        for batch in range(5):  # ~3,000 pages: thrice SQLite's default checkpoint interval
            with sessions.begin() as session:
                execute_many(
                    session,
                    lifecycle_touches.insert(),
                    [
                        {
                            "customer_id": f"c{batch}-{i:05}",
                            "at": at,
                            "message_id": "m" * 100,
                            "channel": "web",
                        }
                        for i in range(10_000)
                    ],
                )
        # The pages are in the WAL only: no commit copied them into the database file.
        assert database.stat().st_size == before
        stop = threading.Event()
        worker = threading.Thread(target=Checkpointer(engine, interval_s=0.05).run, args=(stop,))
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while database.stat().st_size < before + 8_000_000:
                assert time.monotonic() < deadline, "the checkpointer copied nothing back"
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join(5)
    finally:
        engine.dispose()


def test_a_thread_keeps_its_sqlite_connection_while_the_checkpointer_runs(sqlite_url: str) -> None:
    """SQLite empties a connection's page cache when another connection wrote since its last
    transaction: a consumer must get its own connection back every batch, checkpoints or not."""
    engine = make_engine(sqlite_url, background_checkpoints=True)
    sessions = make_session_factory(engine)
    stop = threading.Event()
    worker = threading.Thread(target=Checkpointer(engine, interval_s=0.001).run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the checkpointer never connected"
            time.sleep(0.01)
        used = []
        for batch in range(50):
            with sessions.begin() as session:
                used.append(session.connection().connection.driver_connection)
                execute_many(
                    session,
                    lifecycle_touches.insert(),
                    [
                        {
                            "customer_id": f"c{batch}-{i}",
                            "at": datetime.now(UTC),
                            "message_id": f"m{batch}-{i}",
                            "channel": "web",
                        }
                        for i in range(200)
                    ],
                )
        assert all(conn is used[0] for conn in used)
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the checkpointer's
    finally:
        stop.set()
        worker.join(5)
        engine.dispose()


def test_the_checkpointer_starts_the_wal_over_under_a_writer_that_never_pauses(
    sqlite_url: str,
) -> None:
    """PASSIVE checkpoints never catch up with back-to-back commits: without restarts the WAL
    file would grow to every page written here (~20,000)."""
    engine = make_engine(sqlite_url, background_checkpoints=True)
    sessions = make_session_factory(engine)
    wal = Path(sqlite_url.removeprefix("sqlite:///") + "-wal")
    stop = threading.Event()
    checkpointer = Checkpointer(engine, interval_s=0.01, restart_pages=500)
    worker = threading.Thread(target=checkpointer.run, args=(stop,))
    worker.start()
    largest = 0
    try:
        for batch in range(100):  # ~200 pages per transaction: a row in each key range
            with sessions.begin() as session:
                execute_many(
                    session,
                    lifecycle_touches.insert(),
                    [
                        {
                            "customer_id": f"c{i:03}-{batch}",
                            "at": datetime.now(UTC),
                            "message_id": "m" * 100,
                            "channel": "web",
                        }
                        for i in range(200)
                    ],
                )
            largest = max(largest, wal.stat().st_size // 4096)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM lifecycle_touches").scalar() == 20_000
    finally:
        stop.set()
        worker.join(5)
        engine.dispose()
    assert largest < 10_000, f"the WAL file grew to {largest} pages"
