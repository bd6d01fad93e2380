"""The CDNOW sample (2,357 customers, Q1 1997 cohort), shipped in the Lifetimes 0.11.3 wheel.

The package itself is never imported (archived, broken dependencies): only its data file is read.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class Transaction:
    customer: str
    day: date
    cds: int
    dollars: float


def sample_path() -> Path:
    located = importlib.metadata.distribution("Lifetimes").locate_file(
        "lifetimes/datasets/CDNOW_sample.txt"
    )
    return Path(str(located))


def transactions() -> list[Transaction]:
    rows = []
    for line in sample_path().read_text().splitlines():
        if not line.strip():
            continue
        master, _sample, ymd, cds, dollars = line.split()
        day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]))
        rows.append(Transaction(master, day, int(cds), float(dollars)))
    return rows
