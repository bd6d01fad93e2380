"""Scoring's own metrics (declared in services/scoring/service.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REFIT_SECONDS = Histogram(
    "touchline_scoring_refit_seconds",
    "Duration of BG/NBD + Gamma-Gamma refits",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REFITS = Counter("touchline_scoring_refits", "Model refits, by outcome", ["outcome"])

OWN = (REFIT_SECONDS, REFITS)
