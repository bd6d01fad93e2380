"""Fixtures for the three test tiers: a real embedded broker and real SQLite/PostgreSQL databases,
built by running the alembic migrations."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from shared.events import all_topics
from shared.kafka import ensure_topics
from shared.migrate import upgrade
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support.postgres import PostgresCluster, find_pg_bin
from touchline.broker import EmbeddedBroker, free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TIERS = ("unit", "integration", "e2e")  # tests/<tier>/: `make test-<tier>` selects by marker

# No per-example deadline: speed is measured by the benchmarks, and tests share the machine's
# cores with another worker (`make test` runs two).
settings.register_profile("touchline", deadline=None)
settings.load_profile("touchline")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, the directory it lives in."""
    tests = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(tests).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session, every Touchline topic created (tests use fresh
    consumer groups and customer ids, so they do not see each other's effects)."""
    b = EmbeddedBroker(free_port(), tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    ensure_topics(b.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for tests that stop and restart it."""
    b = EmbeddedBroker(free_port(), tmp_path / "own-broker.log")
    b.start()
    ensure_topics(b.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if IN_CI:
            pytest.fail("PostgreSQL server binaries not found (CI must run the PostgreSQL tests)")
        pytest.skip("PostgreSQL server binaries not found")
    cluster = PostgresCluster(bin_dir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'touchline.db'}"
    upgrade(url)
    return url


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    url = pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind: the test runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url
