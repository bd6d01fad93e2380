"""Instructions and page I/O system calls per lifecycle event at 10k and 1M customers, counted
by valgrind's callgrind and by strace: a measure of how the consumer's work grows with the
population that, unlike the drain rate, does not move with the machine's hour (the same run
counts the same instructions).

Each count runs THE loop's `process` (as `bench.lifecycle_phases` does: decode, processed-message
insert, the lifecycle engine, commit; no Kafka) under each tool over the first N events of the
lifecycle workload, on a copy of a database filled with the population. Two event counts per
population, and the difference between them per event, leaves out what a run spends on starting
(imports, the engine, the first page reads). Callgrind counts the consumer's user-space
instructions, SQLite's included; strace the same runs' page reads (`pread64`: pages SQLite's
own cache did not hold, read from the database or the WAL) and writes (`pwrite64`: WAL frames,
two calls each). Not counted: the background checkpointer (off here, so the counts do not
depend on timing) and time lost waiting on memory. A profiling aid beside `bench.lifecycle`, so
no raw Kafka baseline: a mix takes about 12 minutes (valgrind runs Python about 50 times slower).

    .venv/bin/python -m bench.lifecycle_instructions [--customers 10000,1000000]
        [--events 2000,10000] [--mix typical]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.lifecycle import MIXES, populate, workload
from bench.lifecycle_phases import run_loop
from shared.events import TOUCHPOINTS
from shared.kafka import Record
from shared.migrate import upgrade

TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)
SYSCALLS = ("pread64", "pwrite64")


def counted(tool: str, work: Path, database: Path, events: Path, count: int) -> list[int]:
    """What `tool` (callgrind: [instructions]; strace: [page reads, page writes]) counts for a
    run of this module's `--count` mode on a fresh copy of `database`."""
    copy = work / f"{database.stem}-{tool}-{count}.db"
    shutil.copyfile(database, copy)
    out = work / f"{tool}-{database.stem}-{count}.out"
    wrapper = {
        "callgrind": ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"],
        "strace": ["strace", "-f", "-c", "-o", str(out), "-e", f"trace={','.join(SYSCALLS)}"],
    }[tool]
    run = [sys.executable, "-m", "bench.lifecycle_instructions", "--count", str(count)]
    subprocess.run(
        [*wrapper, *run, "--database", str(copy), "--workload", str(events)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    text = out.read_bytes()
    copy.unlink()
    if tool == "callgrind":
        found = TOTALS.search(text)
        assert found is not None, f"no totals in {out}"
        return [int(found.group(1))]
    calls = {line.split()[-1]: int(line.split()[-2]) for line in text.decode().splitlines()[2:-2]}
    return [calls.get(name, 0) for name in SYSCALLS]


def count_mode(database: str, events_file: str, count: int) -> None:
    """Run under callgrind or strace: the first `count` events of the workload file through THE
    loop."""
    lines = Path(events_file).read_bytes().splitlines()[:count]
    records = [Record(TOUCHPOINTS, 0, offset, None, line) for offset, line in enumerate(lines)]
    work = Path(database).parent
    run_loop(f"sqlite:///{database}", work, records, checkpoints=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", default="10000,1000000")
    parser.add_argument("--events", default="2000,10000", help="two event counts, fewer first")
    parser.add_argument("--mix", choices=sorted(MIXES), default="typical")
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)  # a run under a counter
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count is not None:
        count_mode(args.database, args.workload, args.count)
        return
    missing = [tool for tool in ("valgrind", "strace") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (Debian packages of those names)")
    fewer, more = (int(n) for n in args.events.split(","))
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))
    for size in (int(s) for s in args.customers.split(",")):
        database = work / f"lifecycle-{size}.db"
        upgrade(f"sqlite:///{database}")
        populate(f"sqlite:///{database}", size)
        events = work / f"workload-{size}.jsonl"
        events.write_bytes(b"\n".join(e.to_json() for e in workload(more, size, args.mix)))
        runs = [(tool, n) for tool in ("callgrind", "strace") for n in (fewer, more)]
        with ThreadPoolExecutor(2) as pool:  # the counts do not depend on what else runs
            futures = [pool.submit(counted, tool, work, database, events, n) for tool, n in runs]
            (low,), (high,), io_low, io_high = (future.result() for future in futures)
        span = more - fewer
        reads, writes = ((h - lo) / span for lo, h in zip(io_low, io_high, strict=True))
        print(
            f"[{size:>9,} customers, {args.mix}] per event: {(high - low) / span:,.0f} "
            f"instructions, {reads:.2f} pread64 and {writes:.2f} pwrite64 calls "
            f"(events {fewer:,} -> {more:,}: {low:,} -> {high:,} instructions)",
            flush=True,
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
