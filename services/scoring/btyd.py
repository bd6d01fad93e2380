"""Buy-till-you-die models: BG/NBD (Fader, Hardie & Lee 2005) for purchase counts and P(alive),
Gamma-Gamma for spend per transaction, and predicted CLV. Pure numpy/scipy.

Per customer: x = repeat purchases (distinct purchase days - 1), t_x = age at last purchase,
T = age at the end of the observation window, all in weeks; m = mean repeat-purchase spend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

MIN_CUSTOMERS = 20
MIN_REPEAT_BUYERS = 10


class FitError(ValueError):
    """The data cannot support a fit (too few customers or the optimiser did not converge)."""


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
        x, t_x, T = _arrays(x, t_x, T)
        return 1.0 / (1.0 + _dropout_odds(self, x, t_x, T))

    def conditional_expected_purchases(
        self, t: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
    ) -> NDArray[np.float64]:
        """E[Y(t) | x, t_x, T]: expected purchases in the next `t` weeks."""
        x, t_x, T = np.broadcast_arrays(*_arrays(x, t_x, T))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        # ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z), rewritten with Euler's
        # transformation so that heavy buyers (large x) do not overflow the hypergeometric term;
        # where that form is not finite (a and b in the millions: a population whose dropout
        # rates are all alike), the direct form converges instead.
        with np.errstate(all="ignore"):
            tail = np.asarray((1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z))
            bad = ~np.isfinite(tail)
            if bad.any():
                xb, zb = x[bad], z[bad]
                tail[bad] = (1 - zb) ** (r + xb) * hyp2f1(r + xb, b + xb, a + b + xb - 1, zb)
        if not np.isfinite(tail).all():
            raise FitError("expected purchases cannot be computed for these parameters")
        head = (a + b + x - 1) / (a - 1)
        body = 1.0 - tail
        return np.asarray(head * body / (1.0 + _dropout_odds(self, x, t_x, T)), dtype=np.float64)

    def expected_purchases(self, t: float) -> float:
        """Unconditional E[X(t)] for a new customer over `t` weeks."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return float((a + b - 1) / (a - 1) * (1.0 - (alpha / (alpha + t)) ** r * hyp))


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")

    @property
    def population_mean_spend(self) -> float:
        return self.p * self.gamma / (self.q - 1)

    def conditional_expected_spend(self, x: ArrayLike, m: ArrayLike) -> NDArray[np.float64]:
        """E[M | x, m]; customers without repeat purchases (x = 0) get the population mean."""
        x = np.asarray(x, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        p, q, gamma = self.p, self.q, self.gamma
        spend = (gamma + x * m) * p / (p * x + q - 1)
        return np.asarray(np.where(x > 0, spend, self.population_mean_spend), dtype=np.float64)


def hyp2f1(a: ArrayLike, b: ArrayLike, c: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
    """Gauss hypergeometric 2F1 for 0 <= z < 1 (all BTYD uses), with a series fallback where
    scipy's result is not finite: terms are summed until they fall below 1e-15 of the sum
    (NaN where that overflows or does not converge)."""
    a, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, c, z)))
    result = np.asarray(special.hyp2f1(a, b, c, z), dtype=np.float64)
    bad = ~np.isfinite(result)
    if bad.any():
        result[bad] = [
            _hyp2f1_series(*args) for args in zip(a[bad], b[bad], c[bad], z[bad], strict=True)
        ]
    return result


def _hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    term = total = 1.0
    for n in range(100_000):
        term *= (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total += term
        if not math.isfinite(total):
            return math.nan
        if abs(term) < 1e-15 * abs(total):
            return total
    return math.nan


def _arrays(*values: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


def _dropout_odds(
    model: BgNbd, x: NDArray[np.float64], t_x: NDArray[np.float64], T: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Odds of having dropped out: a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x) if x > 0, else 0."""
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    safe_x = np.maximum(x, 1)
    log_odds = np.log(a) - np.log(b + safe_x - 1) + (r + x) * np.log((alpha + T) / (alpha + t_x))
    return np.where(x > 0, np.exp(np.minimum(log_odds, 700)), 0.0)


def bgnbd_log_likelihood(
    params: NDArray[np.float64],
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    T: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> float:
    """Total log-likelihood, computed in log space (logaddexp for the two-term sum)."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.where(
        x > 0,
        np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return float(np.sum(weights * (a1 + a2 + np.logaddexp(a3, a4))))


def _compress(*columns: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Unique rows and their counts: 1M customers share far fewer distinct (x, t_x, T)."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return (*(unique[:, i] for i in range(unique.shape[1])), counts.astype(np.float64))


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbd:
    x, t_x, T = _arrays(x, t_x, T)
    if len(x) < MIN_CUSTOMERS or not (x > 0).any():
        raise FitError(f"BG/NBD needs at least {MIN_CUSTOMERS} customers and some repeat buyers")
    ux, ut_x, uT, w = _compress(x, t_x, T)

    def objective(log_params: NDArray[np.float64]) -> float:
        return -bgnbd_log_likelihood(np.exp(log_params), ux, ut_x, uT, w)

    start = np.log([0.5, max(float(np.mean(T)), 1.0), 1.0, 1.0])
    result = optimize.minimize(objective, start, method="Nelder-Mead", options=_NM_OPTIONS)
    r, alpha, a, b = np.exp(result.x)
    if not (result.success and np.isfinite(result.fun)):
        raise FitError(f"BG/NBD fit did not converge: {result.message}")
    return BgNbd(float(r), float(alpha), float(a), float(b), -float(result.fun))


def gamma_gamma_log_likelihood(
    params: NDArray[np.float64],
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> float:
    p, q, gamma = params
    px = p * x
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + gamma)
    )
    return float(np.sum(weights * ll))


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> GammaGamma:
    """Fit on repeat buyers only (x > 0, m > 0)."""
    x, m = _arrays(x, m)
    keep = (x > 0) & (m > 0)
    if keep.sum() < MIN_REPEAT_BUYERS:
        raise FitError(f"Gamma-Gamma needs at least {MIN_REPEAT_BUYERS} repeat buyers")
    ux, um, w = _compress(x[keep], m[keep])

    def objective(log_params: NDArray[np.float64]) -> float:
        return -gamma_gamma_log_likelihood(np.exp(log_params), ux, um, w)

    result = optimize.minimize(
        objective, np.log([1.0, 2.0, 1.0]), method="Nelder-Mead", options=_NM_OPTIONS
    )
    p, q, gamma = np.exp(result.x)
    if not (result.success and np.isfinite(result.fun)) or q <= 1:
        raise FitError(f"Gamma-Gamma fit did not converge: {result.message}")
    return GammaGamma(float(p), float(q), float(gamma), -float(result.fun))


_NM_OPTIONS = {"xatol": 1e-7, "fatol": 1e-9, "maxiter": 20_000, "maxfev": 20_000}


def predicted_clv(
    model: BgNbd,
    spend: ArrayLike,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    horizon_weeks: float,
    margin: float,
    annual_discount_rate: float,
) -> NDArray[np.float64]:
    """Margin x expected spend x expected purchases per 4-week period, each period discounted
    at the annual rate (discrete, compounding every period), summed over the horizon."""
    x, t_x, T = _arrays(x, t_x, T)
    periods = max(1, math.ceil(horizon_weeks / 4))
    clv = np.zeros(np.broadcast(x, t_x, T).shape)
    previous = np.zeros_like(clv)
    for k in range(1, periods + 1):
        t = min(4.0 * k, horizon_weeks)
        cumulative = model.conditional_expected_purchases(t, x, t_x, T)
        discount = (1 + annual_discount_rate) ** (-t / 52.0)
        clv += (cumulative - previous) * discount
        previous = cumulative
    return np.asarray(margin * np.asarray(spend, dtype=np.float64) * clv, dtype=np.float64)
