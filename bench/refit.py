"""Refit time of the value models at 100k and 1M customers (SQLite), split into reading the
purchase days into per-customer summaries and fitting BG/NBD and Gamma-Gamma on them.

    nice .venv/bin/python -m bench.refit [--customers 100000,1000000]

The purchase days are bench.scoring's synthetic histories (the same seed, so the same data as
the refit figures recorded before).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from bench.scoring import populate_days
from services.scoring.btyd import _compress, fit_bgnbd, fit_gamma_gamma
from services.scoring.model import refit, summaries
from shared.db import make_engine, make_session_factory
from shared.migrate import upgrade

OBSERVATION_END = date(2026, 1, 1)


def measure(database_url: str) -> None:
    """Wall-clock and CPU seconds (the machine is shared: CPU time is the steadier figure)."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        wall, cpu = time.perf_counter(), time.process_time()
        row = refit(session, OBSERVATION_END)
        total = (time.perf_counter() - wall, time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        x, t_x, T, m, _ = summaries(session, OBSERVATION_END)
        read = (time.perf_counter() - wall, time.process_time() - cpu)
    engine.dispose()
    if row["error"]:
        raise RuntimeError(row["error"])
    wall, cpu = time.perf_counter(), time.process_time()
    bg = fit_bgnbd(x, t_x, T)
    bg_seconds = (time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    gg = fit_gamma_gamma(x, m)
    gg_seconds = (time.perf_counter() - wall, time.process_time() - cpu)
    rows = len(_compress(x, t_x, T)[0])
    print(
        f"refit, {len(x):>9,} customers (SQLite): {total[0]:6.1f} s wall, {total[1]:.1f} s CPU\n"
        f"  read and summarise {read[0]:.1f} s ({read[1]:.1f} s CPU); BG/NBD on {rows:,} distinct "
        f"rows {bg_seconds[0]:.1f} s ({bg_seconds[1]:.1f} s CPU); Gamma-Gamma on "
        f"{int((x > 0).sum()):,} repeat buyers {gg_seconds[0]:.1f} s ({gg_seconds[1]:.1f} s CPU)"
    )
    print(f"  {bg}\n  {gg}")
    assert np.isfinite(bg.log_likelihood) and np.isfinite(gg.log_likelihood)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", default="100000,1000000")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-refit-"))
    for size in (int(s) for s in args.customers.split(",")):
        url = f"sqlite:///{work / f'refit-{size}.db'}"
        upgrade(url)
        populate_days(url, size)
        measure(url)


if __name__ == "__main__":
    main()
