"""Where the lifecycle consumer's time goes: THE loop's `process` (decode, processed-message
insert, the lifecycle engine, commit) over the lifecycle benchmark's workload, in-process and
without Kafka, in microseconds per event for each phase.

A profiling aid beside `bench.lifecycle`, not a drain rate: no broker, no raw baseline, and the
batches come in time order (through the broker they come per partition, which costs the engine
~10% more at 10k customers). Its figures move less from run to run than the drain's, so an A/B of
two commits shows here first. Phases nest (the engine's phases are inside "engine").

    .venv/bin/python -m bench.lifecycle_phases [--customers 10000] [--events 50000] [--mix typical]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.engine.base

from bench.lifecycle import MIXES, populate, workload
from services.lifecycle import fold, handlers, queries, repository
from shared import consumer_loop
from shared.consumer_loop import ConsumerLoop
from shared.db import Checkpointer, make_engine, make_session_factory
from shared.events import TOUCHPOINTS
from shared.kafka import Publisher, Record
from shared.migrate import upgrade
from shared.runtime import tune_gc
from shared.settings import Settings

PHASES: list[tuple[Any, str, str]] = [
    (ConsumerLoop, "_apply", "transaction (all below)"),
    (consumer_loop, "mark_processed", "processed-message insert"),
    (handlers.LifecycleEngine, "apply", "engine"),
    (queries, "load", "  load (all below)"),
    (queries, "lock_ids", "    ids and profiles read"),
    (queries, "complete_profiles", "    orders and refunds read"),
    (queries, "load_transitions", "    transitions read"),
    (queries, "load_touches", "    touch paths read"),
    (fold, "fold", "  fold"),
    (repository, "write", "  write (all below)"),
    (repository, "add_touches", "    touches written"),
    (repository, "add_transitions", "    transitions and outbox written"),
    (repository, "save_funnel", "    funnel rows written"),
    (repository, "save_touched", "    touched profiles written"),
    (repository, "save_profiles", "    whole profiles written"),
    (sqlalchemy.engine.base.Connection, "_commit_impl", "commit"),
]


@contextmanager
def timed(phases: list[tuple[Any, str, str]]) -> Iterator[dict[str, float]]:
    """Wrap each (owner, attribute) in a wall-clock timer while the block runs; yields the
    seconds spent per label."""
    spent: dict[str, float] = defaultdict(float)
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in phases]

    def wrap(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started

        return timed_call

    for (owner, name, function), (_, _, label) in zip(originals, phases, strict=True):
        setattr(owner, name, wrap(function, label))
    try:
        yield spent
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def run_loop(url: str, work: Path, records: list[Record], checkpoints: bool = True) -> float:
    """THE loop's `process` over `records` in consumer-sized batches on the database at `url`,
    with the lifecycle engine and (unless `checkpoints` is off) a background checkpointer, as the
    service runs them; returns the seconds the batches took."""
    settings = Settings(embedded=True, data_dir=work)
    engine = make_engine(url, background_checkpoints=True)
    stop = threading.Event()
    if checkpoints:
        threading.Thread(target=Checkpointer(engine).run, args=(stop,), daemon=True).start()
    lifecycle = handlers.build_engine(settings)
    loop = ConsumerLoop(
        name="lifecycle",
        subscription=None,  # type: ignore[arg-type]  # never polled: process() is given the batches
        session_factory=make_session_factory(engine),
        # Looked up per batch, so that the timer wrapped around LifecycleEngine.apply sees it.
        handler=lambda session, events: lifecycle.apply(session, events),
        dead_letters=Publisher(settings.kafka_bootstrap, client_id="unused"),  # connects on use
        stop=stop,
    )
    tune_gc()
    batch = settings.consumer_batch_size
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        loop.process(records[start : start + batch])
    elapsed = time.perf_counter() - started
    stop.set()
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--mix", choices=sorted(MIXES), default="typical")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))
    url = f"sqlite:///{work / 'lifecycle.db'}"
    upgrade(url)
    populate(url, args.customers)
    records = [
        Record(TOUCHPOINTS, 0, offset, None, event.to_json())
        for offset, event in enumerate(workload(args.events, args.customers, args.mix))
    ]
    with timed(PHASES) as spent:
        elapsed = run_loop(url, work, records)
    n = len(records)
    print(
        f"[{args.customers:,} customers, {args.mix}] in-process: {n / elapsed:,.0f} events/s, "
        f"{elapsed / n * 1e6:.1f} us/event (decode and batch bookkeeping are the rest)"
    )
    for _, _, label in PHASES:
        print(f"  {label:<36} {spent[label] / n * 1e6:6.1f} us/event")


if __name__ == "__main__":
    main()
