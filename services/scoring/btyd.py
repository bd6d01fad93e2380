"""Buy-till-you-die models: BG/NBD (Fader, Hardie & Lee 2005) for purchase counts and P(alive),
Gamma-Gamma for spend per transaction, and predicted CLV. Pure numpy/scipy.

Per customer: x = repeat purchases (distinct purchase days - 1), t_x = age at last purchase,
T = age at the end of the observation window, all in weeks; m = mean repeat-purchase spend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

MIN_CUSTOMERS = 20
MIN_REPEAT_BUYERS = 10


class FitError(ValueError):
    """The data cannot support a fit (too few customers, or no maximum the optimiser can find)."""


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    boundary: tuple[str, ...] = ()  # limits the fit reached, e.g. "a,b -> inf"

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
        return float(self.expected_purchases_by_age(t))

    def expected_purchases_by_age(self, t: ArrayLike) -> NDArray[np.float64]:
        """E[X(t)] for each of the ages `t` (weeks)."""
        t = np.asarray(t, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = hyp2f1(r, b, a + b - 1, t / (alpha + t))
        # (alpha/(alpha+t))^r as exp(-r log1p(t/alpha)): exact as r and alpha grow together
        return np.asarray(
            (a + b - 1) / (a - 1) * (1.0 - np.exp(-r * np.log1p(t / alpha)) * hyp),
            dtype=np.float64,
        )


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    boundary: tuple[str, ...] = ()

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


# Shape parameters are searched in [1e-6, 1e6] and scale parameters in [1e-6, 1e12] (on log
# scale). A shape parameter past BOUNDARY (coefficient of variation under 1%) is the limit of a
# population without that heterogeneity; its value there predicts like the limiting model.
SHAPE_BOUNDS = (math.log(1e-6), math.log(1e6))
SCALE_BOUNDS = (math.log(1e-6), math.log(1e12))
BOUNDARY = 1e4


def bgnbd_log_likelihood(
    params: ArrayLike,
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    T: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> float:
    """Total log-likelihood, computed in log space (logaddexp for the two-term sum)."""
    return _bgnbd_terms(np.asarray(params, dtype=np.float64), x, t_x, T, weights)[0]


def bgnbd_gradient(
    params: ArrayLike,
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    T: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:
    """d log-likelihood / d (r, alpha, a, b), analytic."""
    return _bgnbd_terms(np.asarray(params, dtype=np.float64), x, t_x, T, weights)[1]


def _bgnbd_terms(
    params: NDArray[np.float64],
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    T: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> tuple[float, NDArray[np.float64]]:
    r, alpha, a, b = params
    # r ln(alpha) - (r+x) ln(alpha+T) written as -r log1p(T/alpha) - x ln(alpha+T): exact when
    # r and alpha run to a million (no purchase-rate heterogeneity)
    b3 = -r * np.log1p(T / alpha) - x * np.log(alpha + T)
    has_repeat = x > 0
    bx1 = b + np.maximum(x, 1) - 1
    b4 = np.where(
        has_repeat,
        np.log(a) - np.log(bx1) - r * np.log1p(t_x / alpha) - x * np.log(alpha + t_x),
        -np.inf,
    )
    both = np.logaddexp(b3, b4)
    ll = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
        + both
    )
    w3 = np.exp(b3 - both)
    w4 = np.where(has_repeat, np.exp(b4 - both), 0.0)
    ab = special.digamma(a + b) - special.digamma(a + b + x)
    grad = np.array(
        [
            special.digamma(r + x)
            - special.digamma(r)
            - w3 * np.log1p(T / alpha)
            - w4 * np.log1p(t_x / alpha),
            w3 * (r * T / (alpha * (alpha + T)) - x / (alpha + T))
            + w4 * (r * t_x / (alpha * (alpha + t_x)) - x / (alpha + t_x)),
            ab + w4 / a,
            ab + special.digamma(b + x) - special.digamma(b) - w4 / bx1,
        ]
    )
    return float(np.sum(weights * ll)), np.asarray(grad @ weights, dtype=np.float64)


def _compress(*columns: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Unique rows and their counts: 1M customers share far fewer distinct (x, t_x, T)."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return (*(unique[:, i] for i in range(unique.shape[1])), counts.astype(np.float64))


@dataclass(frozen=True)
class _Fit:
    params: NDArray[np.float64]
    log_likelihood: float


def _maximise(
    name: str,
    terms: Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]],
    starts: list[NDArray[np.float64]],
    bounds: list[tuple[float, float]],
    n: float,
) -> _Fit:
    """L-BFGS-B on log-parameters with the analytic gradient from several starts (until two reach
    the same log-likelihood per customer); the best answer stands if its projected gradient is
    flat, else Nelder-Mead continues from it."""

    def objective(log_params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        params = np.exp(log_params)
        ll, grad = terms(params)
        if not np.isfinite(ll) or not np.isfinite(grad).all():
            return math.inf, np.zeros_like(log_params)
        return -ll / n, -grad * params / n  # per customer: tolerances do not depend on n

    best: Any = None
    for start in starts:
        result = optimize.minimize(
            objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 2_000, "ftol": 1e-13, "gtol": 1e-9},
        )  # fmt: skip
        if not np.isfinite(result.fun):
            continue
        # two starts that reach the same maximum: the remaining starts would too
        agree = best is not None and abs(result.fun - best.fun) < 1e-9
        if best is None or result.fun < best.fun:
            best = result
        if agree:
            break
    if best is not None and _flat(objective, best.x, bounds):
        return _Fit(np.exp(best.x), -float(best.fun) * n)
    fallback = optimize.minimize(
        lambda v: objective(v)[0],
        best.x if best is not None else starts[0],
        method="Nelder-Mead",
        bounds=bounds,
        options={"xatol": 1e-8, "fatol": 1e-12, "maxfev": 20_000},
    )
    if not (np.isfinite(fallback.fun) and _flat(objective, fallback.x, bounds)):
        raise FitError(f"{name} fit did not converge: {fallback.message}")
    return _Fit(np.exp(fallback.x), -float(fallback.fun) * n)


def _flat(
    objective: Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]],
    log_params: NDArray[np.float64],
    bounds: list[tuple[float, float]],
) -> bool:
    """Projected gradient (per customer, log-parameters) below 1e-4: at a maximum or a bound
    (rounding in the log-gammas of shape parameters near 1e6 leaves gradients about 1e-5)."""
    _, grad = objective(log_params)
    low = np.array([lo for lo, _ in bounds])
    high = np.array([hi for _, hi in bounds])
    grad = np.where((log_params <= low + 1e-9) & (grad > 0), 0.0, grad)
    grad = np.where((log_params >= high - 1e-9) & (grad < 0), 0.0, grad)
    return bool(np.isfinite(grad).all() and np.abs(grad).max() < 1e-4)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbd:
    x, t_x, T = _arrays(x, t_x, T)
    if len(x) < MIN_CUSTOMERS or not (x > 0).any():
        raise FitError(f"BG/NBD needs at least {MIN_CUSTOMERS} customers and some repeat buyers")
    ux, ut_x, uT, w = _compress(x, t_x, T)
    rate = max(float(x.sum() / max(T.sum(), 1e-9)), 1e-6)  # purchases per week, for the starts
    starts = [
        np.log([r, r / rate, a, b])
        for r, a, b in ((0.5, 1.0, 1.0), (2.0, 0.5, 3.0), (20.0, 5.0, 20.0))
    ]
    bounds = [SHAPE_BOUNDS, SCALE_BOUNDS, SHAPE_BOUNDS, SHAPE_BOUNDS]
    fit = _maximise(
        "BG/NBD", lambda p: _bgnbd_terms(p, ux, ut_x, uT, w), starts, bounds, float(len(x))
    )
    r, alpha, a, b = (float(v) for v in fit.params)
    boundary = []
    if r >= BOUNDARY:
        boundary.append("r,alpha -> inf")  # one purchase rate for everyone
    if a >= BOUNDARY and b >= BOUNDARY:
        boundary.append("a,b -> inf")  # one dropout probability for everyone
    elif b >= BOUNDARY or a <= 1 / BOUNDARY:
        boundary.append("b -> inf" if b >= BOUNDARY else "a -> 0")  # nobody drops out
    return BgNbd(r, alpha, a, b, fit.log_likelihood, tuple(boundary))


def gamma_gamma_log_likelihood(
    params: ArrayLike,
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> float:
    return _gamma_gamma_terms(np.asarray(params, dtype=np.float64), x, m, weights)[0]


def gamma_gamma_gradient(
    params: ArrayLike,
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:
    """d log-likelihood / d (p, q, gamma), analytic."""
    return _gamma_gamma_terms(np.asarray(params, dtype=np.float64), x, m, weights)[1]


def _gamma_gamma_terms(
    params: NDArray[np.float64],
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> tuple[float, NDArray[np.float64]]:
    p, q, gamma = params
    px = p * x
    # q ln(gamma) - (px+q) ln(xm+gamma) as -q log1p(xm/gamma) - px ln(xm+gamma), as above
    spend = x * m
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - q * np.log1p(spend / gamma)
        - px * np.log(spend + gamma)
    )
    both = special.digamma(px + q)
    grad = np.array(
        [
            x * (both - special.digamma(px) + np.log(m) + np.log(x) - np.log(spend + gamma)),
            both - special.digamma(q) - np.log1p(spend / gamma),
            q * spend / (gamma * (spend + gamma)) - px / (spend + gamma),
        ]
    )
    return float(np.sum(weights * ll)), np.asarray(grad @ weights, dtype=np.float64)


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> GammaGamma:
    """Fit on repeat buyers only (x > 0, m > 0)."""
    x, m = _arrays(x, m)
    keep = (x > 0) & (m > 0)
    if keep.sum() < MIN_REPEAT_BUYERS:
        raise FitError(f"Gamma-Gamma needs at least {MIN_REPEAT_BUYERS} repeat buyers")
    ux, um, w = _compress(x[keep], m[keep])
    mean = float(np.average(um, weights=w))
    starts = [np.log([p, q, mean * (q - 1) / p]) for p, q in ((1.0, 2.0), (5.0, 4.0), (20.0, 20.0))]
    bounds = [SHAPE_BOUNDS, SHAPE_BOUNDS, SCALE_BOUNDS]
    fit = _maximise(
        "Gamma-Gamma", lambda v: _gamma_gamma_terms(v, ux, um, w), starts, bounds, float(w.sum())
    )
    p, q, gamma = (float(v) for v in fit.params)
    if q <= 1:
        raise FitError(f"Gamma-Gamma fit has q = {q:.3g} <= 1: the mean spend is not finite")
    boundary = []
    if q >= BOUNDARY:
        boundary.append("q,gamma -> inf")  # one mean spend for everyone
    if p >= BOUNDARY:
        boundary.append("p -> inf")  # every customer spends the same amount each time
    return GammaGamma(p, q, gamma, fit.log_likelihood, tuple(boundary))


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
