"""Populations drawn from BG/NBD + Gamma-Gamma with known parameters (Fader, Hardie & Lee 2005):
purchase times and amounts per customer, for parameter-recovery tests, validation and the demo.

Each customer makes a first purchase at their start, then buys at Poisson rate lambda ~
Gamma(r, alpha) and after each repeat purchase drops out with probability p ~ Beta(a, b); each
purchase amount is Gamma(p_spend, nu) with nu ~ Gamma(q, gamma). Time in weeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.scoring.btyd import BgNbd, GammaGamma


@dataclass(frozen=True)
class Population:
    """Per customer: start (weeks), the true rate, dropout probability and mean spend, and the
    purchases (start included) as times and amounts; `alive_at` says who is alive at a time."""

    start: NDArray[np.float64]
    rate: NDArray[np.float64]
    dropout: NDArray[np.float64]
    mean_spend: NDArray[np.float64]
    times: list[NDArray[np.float64]]
    amounts: list[NDArray[np.float64]]
    death: NDArray[np.float64]  # when the customer dropped out (inf: never within the window)

    def summaries(self, end: float) -> tuple[NDArray[np.float64], ...]:
        """x, t_x, T and mean repeat spend from the purchases up to `end`, for those started."""
        x, t_x, T, m = [], [], [], []
        for start, times, amounts in zip(self.start, self.times, self.amounts, strict=True):
            if start > end:
                continue
            seen = times[times <= end]
            x.append(len(seen) - 1)
            t_x.append(seen[-1] - start)
            T.append(end - start)
            m.append(float(amounts[1 : len(seen)].mean()) if len(seen) > 1 else 0.0)
        return tuple(np.array(v, dtype=np.float64) for v in (x, t_x, T, m))

    def expected_purchases(self, end: float, t: float) -> float:
        """True expected purchases in (end, end + t] of those alive at `end`:
        sum of (1 - exp(-lambda p t)) / p (FHL 2005, E[X(t) | lambda, p])."""
        alive = (self.start <= end) & (self.death > end)
        lam, p = self.rate[alive], self.dropout[alive]
        return float(np.sum(-np.expm1(-lam * p * t) / np.maximum(p, 1e-12)))


def simulate(
    bgnbd: BgNbd,
    gamma_gamma: GammaGamma,
    start: NDArray[np.float64],
    end: float,
    rng: np.random.Generator,
    *,
    same_rate: float | None = None,
) -> Population:
    """Draw one customer per entry of `start` and their purchases up to `end` (weeks).
    `same_rate`: everyone buys at this rate (the limit r, alpha -> inf)."""
    n = len(start)
    rate = (
        np.full(n, same_rate) if same_rate is not None else rng.gamma(bgnbd.r, 1 / bgnbd.alpha, n)
    )
    dropout = rng.beta(bgnbd.a, bgnbd.b, n)
    nu = rng.gamma(gamma_gamma.q, 1 / gamma_gamma.gamma, n)
    times: list[list[float]] = [[float(s)] for s in start]
    now = np.array(start, dtype=np.float64)
    death = np.full(n, np.inf)
    active = np.arange(n)
    while len(active):
        now[active] += rng.exponential(1 / np.maximum(rate[active], 1e-300))
        active = active[now[active] <= end]
        for i in active:
            times[i].append(float(now[i]))
        gone = rng.random(len(active)) < dropout[active]
        death[active[gone]] = now[active[gone]]
        active = active[~gone]
    amounts = [rng.gamma(gamma_gamma.p, 1 / nu[i], len(t)) for i, t in enumerate(times)]
    return Population(
        start=np.asarray(start, dtype=np.float64),
        rate=rate,
        dropout=dropout,
        mean_spend=gamma_gamma.p / nu,
        times=[np.array(t) for t in times],
        amounts=amounts,
        death=death,
    )
