"""Database plumbing: metadata with naming conventions, engines for SQLite and PostgreSQL,
sessions, and the processed-message table that makes every consumer exactly-once."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    delete,
    event,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

log = logging.getLogger(__name__)

S = TypeVar("S")

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases.

    PostgreSQL stores `timestamptz`. SQLite stores the same text SQLAlchemy's DateTime would
    ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC), formatted and parsed here directly: it is on the
    consumers' hot path, and the text sorts and compares in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name != "sqlite":
            if value.tzinfo is None:
                raise ValueError("naive datetime given; Touchline stores aware UTC times only")
            return value
        if value.tzinfo is UTC:  # the common case (event times are normalised to it): fast path
            return _sqlite_text(value)
        offset = value.utcoffset()
        if offset is None:
            raise ValueError("naive datetime given; Touchline stores aware UTC times only")
        return (value.replace(tzinfo=None) - offset).isoformat(" ", "microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if type(value) is str:  # SQLite (parsing the offset is faster than replace(tzinfo=))
            return datetime.fromisoformat(value + "+00:00")
        assert isinstance(value, datetime)
        return value if value.tzinfo is UTC else value.astimezone(UTC)


_TEXTS: dict[datetime, str] = {}


def _sqlite_text(value: datetime) -> str:
    """SQLite's text of a UTC time, remembered: a batch writes the same times many times over
    (its `now` on every row, an event's time on its touch and its profile), and formatting one
    costs ~2 us."""
    text = _TEXTS.get(value)
    if text is None:
        if len(_TEXTS) >= 10_000:
            _TEXTS.clear()
        text = _TEXTS[value] = value.isoformat(" ", "microseconds")[:26]
    return text


processed_messages = Table(
    "processed_messages",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    # Hash of the sender (the event's source and customer key): a message id is unique per sender.
    Column("scope", String(32), primary_key=True),
    Column("processed_at", UTCDateTime(), nullable=False),
    # Hash of the event's customer key (shared.privacy.id_hash): what an erasure deletes by.
    Column("customer_hash", String(32)),
)


AUTOCHECKPOINT_PAGES = 10_000
"""SQLite checkpoints the WAL into the database after a commit that leaves it this long: copies
(and fsyncs) each page less often than SQLite's default of 1,000."""

BACKGROUND_AUTOCHECKPOINT_PAGES = 100_000
"""The same bound for an engine whose checkpoints a `Checkpointer` thread makes: a safety net
that only a stalled checkpointer lets the WAL reach (400 MB)."""

RESTART_WAL_PAGES = 16_384
"""A `Checkpointer` makes the WAL start over once it is this long (64 MiB of 4 KiB pages)."""

WAL_SIZE_LIMIT = 256 * 1024 * 1024
"""`journal_size_limit`: the WAL file is cut back to this size when it starts over. Above what a
restart at RESTART_WAL_PAGES leaves (cutting back a large file stalls the next commit by
0.1-0.5 s); it only trims the file after a stalled checkpointer let the WAL grow."""

BUSY_TIMEOUT_MS = 30_000
RESTART_TRY_MS = 5
"""How long one restart attempt of a `Checkpointer` waits for the write lock (or for a reader
whose snapshot holds pages back)."""

RESTART_WINDOW_S = 1.0
"""How long a `Checkpointer` tries to restart the WAL before it lets the next round try again."""


def make_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> Engine:
    """An engine with the settings Touchline relies on (SQLite: WAL, busy timeout, FKs).

    `background_checkpoints` (SQLite): a `Checkpointer` checkpoints this database, so commits on
    this engine do not checkpoint (and wait for the checkpoint's fsyncs) themselves."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Hand a thread back the connection it just returned: SQLite drops a connection's
            # whole page cache when another connection wrote since its last transaction, so a
            # consumer taking turns with the pool's other connections (FIFO) read the B-trees
            # afresh about every other batch.
            kwargs.setdefault("pool_use_lifo", True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, **kwargs)
        autocheckpoint = (
            BACKGROUND_AUTOCHECKPOINT_PAGES if background_checkpoints else AUTOCHECKPOINT_PAGES
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Consumers write ~2 random pages per event: checkpoint rarely (see above). 16 MiB
            # of page cache per connection keeps the upper B-tree levels of a large database in
            # memory (default: 2 MiB).
            cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            cursor.execute("PRAGMA cache_size=-16384")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # A database that does not answer fails the connection in 5 s instead of hanging.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}, **kwargs)


class Checkpointer:
    """Copies a SQLite WAL back into the database file from its own thread, so that a writer's
    commit never waits for a checkpoint: in WAL mode with synchronous=NORMAL, checkpoints are
    where SQLite fsyncs (the WAL, then the database file), and on this kind of disk that took
    a third of a consumer's time at 1M customers. Durability is unchanged: commits still reach
    the WAL before they return, and a checkpoint still syncs before the WAL is reused.

    PASSIVE checkpoints neither take the write lock nor wait for readers; they copy what was
    committed when they started. Once a second, not after every commit: a page written by several
    commits in between is copied (and synced) once; at 0.1 s the fsyncs of small commits starved
    the other services under steady load (freshness p99 4 s, not 1.3 s).

    The WAL starts over from its beginning only when a writer begins with every page copied, and
    a consumer that never pauses commits while each PASSIVE checkpoint copies: its WAL grew to
    the 400 MB safety net, where a commit checkpointed and cut the file back itself, stalling
    the consumer for ~1 s. So past `restart_pages` the checkpointer copies the last pages
    holding the write lock (`_restart`), and the next writer starts the WAL over."""

    def __init__(
        self, engine: Engine, interval_s: float = 1.0, restart_pages: int = RESTART_WAL_PAGES
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._restart_pages = restart_pages

    def run(self, stop: threading.Event) -> None:
        # A connection of its own, held throughout: one taken from the pool each time would
        # go back on top of it, and the consumer's next transaction would start on that one,
        # with a cold page cache (see make_engine).
        conn: PoolProxiedConnection | None = None
        try:
            while not stop.wait(self._interval_s):
                try:
                    if conn is None:
                        conn = self._engine.raw_connection()
                    cursor = conn.cursor()
                    _busy, pages, _copied = _checkpoint(cursor, "PASSIVE")
                    if pages >= self._restart_pages:
                        self._restart(cursor)
                    cursor.close()
                except Exception as exc:  # the database is down: the consumer loop reports that
                    log.warning("checkpoint failed, will retry: %s", type(exc).__name__)
                    if conn is not None:
                        conn.invalidate()
                        conn = None
                    stop.wait(1.0)
        finally:
            if conn is not None:
                conn.close()

    def _restart(self, cursor: Any) -> None:
        """A FULL checkpoint: copy every page with the write lock held, so that the next writer
        finds the WAL copied and starts it over (unless a reader still reads from it). The lock
        is free only between two of a writer's transactions: each attempt waits for it a few ms
        (then copies what it can, as PASSIVE does) and the next follows at once, for at most
        RESTART_WINDOW_S. A reader with an older snapshot stops the attempts (no copy can pass
        it), so they never keep the lock from writers for long. A writer waits while an attempt
        holds the lock: ~0.1 s at 1M customers, copying the last transaction's pages."""
        cursor.execute(f"PRAGMA busy_timeout={RESTART_TRY_MS}")
        try:
            deadline = time.monotonic() + RESTART_WINDOW_S
            while time.monotonic() < deadline:
                busy, pages, copied = _checkpoint(cursor, "FULL")
                if not busy or copied < pages:
                    return
        finally:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _checkpoint(cursor: Any, mode: str) -> tuple[int, int, int]:
    """`PRAGMA wal_checkpoint(mode)`: (1 if it could not finish, pages in the WAL, pages copied)."""
    cursor.execute(f"PRAGMA wal_checkpoint({mode})")
    busy, pages, copied = cursor.fetchone()
    return busy, pages, copied


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def upsert_into(session: Session, table: Table) -> Any:
    """`INSERT INTO table` in the session's dialect, with `.on_conflict_do_*` and `.excluded`
    (SQLite and PostgreSQL spell upserts the same way, through different constructs)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(table)


def once_per_dialect(build: Callable[..., S]) -> Callable[..., S]:
    """`build(session, *args)`'s statement, made once per database dialect and arguments (they
    must be hashable) and then reused: building an upsert costs ~0.6 ms and compiling it ~1 ms,
    more than SQLite's work for a hundred rows, and `execute_many` compiles a reused statement
    only once."""
    built: dict[tuple[Any, ...], S] = {}

    @functools.wraps(build)
    def statement(session: Session, *args: Any) -> S:
        key = (session.get_bind().dialect.name, *args)
        if key not in built:
            built[key] = build(session, *args)
        return built[key]

    return statement


class _Compiled(NamedTuple):
    """A statement compiled for SQLite's driver: its SQL, and how to turn a row into parameters."""

    sql: str
    values: Callable[[dict[str, Any]], tuple[Any, ...]]
    converters: Sequence[tuple[int, Callable[[Any], Any]]]


_COMPILED: weakref.WeakKeyDictionary[UpdateBase, dict[tuple[str, ...], _Compiled]] = (
    weakref.WeakKeyDictionary()
)


def _compiled(statement: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    by_keys = _COMPILED.get(statement)
    if by_keys is None:
        by_keys = _COMPILED[statement] = {}
    found = by_keys.get(keys)
    if found is None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        names = compiled.positiontup  # SQLite's parameters are positional
        assert names is not None
        values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        converters = [
            (i, convert)
            for i, name in enumerate(names)
            if (convert := compiled.binds[name].type.bind_processor(dialect)) is not None
        ]
        found = by_keys[keys] = _Compiled(compiled.string, values, converters)
    return found


def execute_many(session: Session, statement: UpdateBase, rows: Sequence[dict[str, Any]]) -> None:
    """Run an INSERT, UPDATE or DELETE once for each of `rows` (parameters by name, the same
    names in every row).

    SQLite: straight through the driver's executemany, each value converted by its column's type
    (compiled once per statement object: reuse one, see `once_per_dialect`). SQLAlchemy's own
    executemany builds and processes every row's parameters in Python, which cost the consumers
    more than SQLite's work. Other databases: SQLAlchemy's executemany, which batches the rows of
    an INSERT into multi-row statements there."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        session.execute(statement, rows)
        return
    compiled = _compiled(statement, conn.dialect, tuple(rows[0]))
    values, converters = compiled.values, compiled.converters
    parameters: list[tuple[Any, ...]] = []
    for row in rows:
        params = values(row)
        if converters:
            converted = list(params)
            for i, convert in converters:
                converted[i] = convert(converted[i])
            params = tuple(converted)
        parameters.append(params)
    conn.exec_driver_sql(compiled.sql, parameters)


def dedup_scope(source: str, customer_hash: str) -> str:
    """The sender of an event, what its message id is unique within: 96 bits of its customer key's
    hash (shared.privacy.id_hash, already at hand) and 32 bits of the hash of its source."""
    return customer_hash[:24] + _source_tag(source)


@functools.lru_cache(maxsize=1024)
def _source_tag(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:8]


def mark_processed(
    session: Session, consumer: str, messages: Iterable[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """Atomically record (message id, scope, customer hash) triples as processed by `consumer`;
    return the (message id, scope) keys that were new.

    One `INSERT .. ON CONFLICT DO NOTHING RETURNING` per batch: keys already present (a replay
    or a duplicate delivery) are not returned, so their events are skipped. Never check-then-insert.
    """
    hashes = {(m, s): h for m, s, h in messages}  # a key twice in a batch: one row
    if not hashes:
        return set()
    now = datetime.now(UTC)
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        return _mark_processed_sqlite(conn, consumer, hashes, now)
    rows = [
        {"consumer": consumer, "message_id": m, "scope": s, "processed_at": now, "customer_hash": h}
        for (m, s), h in hashes.items()
    ]
    # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
    # from one cached statement; conflicting (already processed) keys return no row.
    p = processed_messages.c
    stmt = (
        upsert_into(session, processed_messages)
        .on_conflict_do_nothing()
        .returning(p.message_id, p.scope)
    )
    return {(m, s) for m, s in session.execute(stmt, rows)}


_PROCESSED_PER_INSERT = 1000  # 5,000 parameters, far under SQLite's limit of 32,766
_PROCESSED_INSERT = (
    "INSERT INTO processed_messages (consumer, message_id, scope, processed_at, customer_hash) "
    "VALUES {rows} ON CONFLICT DO NOTHING RETURNING message_id, scope"
)


def _mark_processed_sqlite(
    conn: Connection, consumer: str, hashes: dict[tuple[str, str], str], now: datetime
) -> set[tuple[str, str]]:
    """`mark_processed` straight through SQLite's driver: one multi-row insert per
    `_PROCESSED_PER_INSERT` keys, the parameters as a flat tuple (SQLAlchemy's insertmanyvalues
    builds and converts a dictionary of parameters per row, about as much time as SQLite's own
    work)."""
    processed_at = UTCDateTime().process_bind_param(now, conn.dialect)
    items = list(hashes.items())
    new: set[tuple[str, str]] = set()
    for start in range(0, len(items), _PROCESSED_PER_INSERT):
        chunk = items[start : start + _PROCESSED_PER_INSERT]
        sql = _PROCESSED_INSERT.format(rows=",".join(["(?,?,?,?,?)"] * len(chunk)))
        params = tuple(v for (m, s), h in chunk for v in (consumer, m, s, processed_at, h))
        new.update((m, s) for m, s in conn.exec_driver_sql(sql, params))
    return new


def forget_processed(session: Session, consumer: str, keys: Sequence[tuple[str, str]]) -> None:
    """Remove processed-message records, by (message id, scope), of events that were dropped
    after all."""
    p = processed_messages.c
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        session.execute(
            delete(processed_messages).where(
                p.consumer == consumer, tuple_(p.message_id, p.scope).in_(chunk)
            )
        )
