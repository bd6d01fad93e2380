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
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        started = time.perf_counter()
        row = refit(session, OBSERVATION_END)
        total = time.perf_counter() - started
        started = time.perf_counter()
        x, t_x, T, m, _ = summaries(session, OBSERVATION_END)
        read = time.perf_counter() - started
    engine.dispose()
    if row["error"]:
        raise RuntimeError(row["error"])
    started = time.perf_counter()
    bg = fit_bgnbd(x, t_x, T)
    bg_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gg = fit_gamma_gamma(x, m)
    gg_seconds = time.perf_counter() - started
    rows = len(_compress(x, t_x, T)[0])
    print(
        f"refit, {len(x):>9,} customers (SQLite): {total:6.1f} s "
        f"(read and summarise {read:.1f} s; BG/NBD {bg_seconds:.2f} s on {rows:,} distinct rows, "
        f"Gamma-Gamma {gg_seconds:.2f} s; repeat buyers {int((x > 0).sum()):,})"
    )
    print(f"  BG/NBD {bg}\n  Gamma-Gamma {gg}")
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
