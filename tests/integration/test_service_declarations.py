"""Each service is declared once: the consumer-only process runs the workers its API runs, so a
consumer-only scoring deployment refits on schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from services.scoring.tables import scoring_models
from tests.support.pipeline import settings_env, wait_for
from touchline.broker import EmbeddedBroker

TOUCHLINE = str(Path(sys.executable).parent / "touchline")


def _models(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(scoring_models)) or 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "command",
    [[TOUCHLINE, "consume", "scoring"], [sys.executable, "-m", "services.scoring.consumer"]],
    ids=["touchline-consume", "python-m"],
)
def test_the_consumer_only_scoring_process_refits_on_schedule(
    broker: EmbeddedBroker, sqlite_url: str, command: list[str]
) -> None:
    assert _models(sqlite_url) == 0
    env = {
        **os.environ,
        **settings_env(broker.bootstrap, sqlite_url, TOUCHLINE_REFIT_INTERVAL_S="1"),
    }
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _models(sqlite_url), lambda n: n >= 1, 60, "a scheduled refit")
    finally:
        process.terminate()
        assert process.wait(30) == 0
