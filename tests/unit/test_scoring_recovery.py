"""The fitters recover known parameters from simulated populations, and answer at the boundary
when a population has no heterogeneity to estimate.

Tolerance: each estimate within 4 standard errors of the truth, the standard errors from the
observed Fisher information (the inverse of minus the log-likelihood's Hessian at the optimum,
the Hessian by central differences of the analytic gradient). For an unbiased, asymptotically
normal estimator a miss has probability 6e-5 per parameter; the draws are seeded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from services.scoring.btyd import (
    BgNbd,
    FitError,
    GammaGamma,
    bgnbd_gradient,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_gradient,
)
from services.scoring.simulate import Population, simulate

CUSTOMERS = 5_000
END = 52.0  # weeks; customers start over the first 12, as the CDNOW cohort did
SPEND = GammaGamma(p=6.25, q=3.74, gamma=15.44)
SETS = {
    "cdnow": BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426),
    "low dropout": BgNbd(r=1.5, alpha=8.0, a=0.3, b=6.0),  # mean dropout 5% per purchase
    "high heterogeneity": BgNbd(r=0.15, alpha=1.5, a=1.5, b=1.0),  # rate CV 2.6
}


def population(bg: BgNbd, seed: int, same_rate: float | None = None) -> Population:
    rng = np.random.default_rng(seed)
    return simulate(bg, SPEND, rng.uniform(0, 12, CUSTOMERS), END, rng, same_rate=same_rate)


def standard_errors(
    gradient: Callable[[NDArray[np.float64]], NDArray[np.float64]], params: NDArray[np.float64]
) -> NDArray[np.float64]:
    steps = params * 1e-5
    hessian = np.array(
        [
            (gradient(params + step) - gradient(params - step)) / (2 * step[i])
            for i, step in enumerate(np.diag(steps))
        ]
    )
    hessian = (hessian + hessian.T) / 2
    return np.asarray(np.sqrt(np.diag(np.linalg.inv(-hessian))), dtype=np.float64)


@pytest.mark.parametrize("name", SETS)
def test_bgnbd_recovers_its_parameters(name: str) -> None:
    truth = SETS[name]
    x, t_x, T, _ = population(truth, seed=list(SETS).index(name)).summaries(END)
    fitted = fit_bgnbd(x, t_x, T)
    estimate = np.array([fitted.r, fitted.alpha, fitted.a, fitted.b])
    ones = np.ones_like(x)
    se = standard_errors(lambda v: bgnbd_gradient(v, x, t_x, T, ones), estimate)
    expected = np.array([truth.r, truth.alpha, truth.a, truth.b])
    assert fitted.boundary == ()
    assert np.all(np.abs(estimate - expected) <= 4 * se), (estimate, expected, se)
    assert np.all(se < 0.25 * expected)  # 5,000 customers pin each parameter down


@pytest.mark.parametrize("name", SETS)
def test_gamma_gamma_recovers_its_parameters(name: str) -> None:
    x, _, _, m = population(SETS[name], seed=10 + list(SETS).index(name)).summaries(END)
    fitted = fit_gamma_gamma(x, m)
    estimate = np.array([fitted.p, fitted.q, fitted.gamma])
    repeat = x > 0
    xr, mr = x[repeat], m[repeat]
    se = standard_errors(lambda v: gamma_gamma_gradient(v, xr, mr, np.ones_like(xr)), estimate)
    expected = np.array([SPEND.p, SPEND.q, SPEND.gamma])
    assert fitted.boundary == ()
    assert np.all(np.abs(estimate - expected) <= 4 * se), (estimate, expected, se)


@pytest.mark.parametrize("name", SETS)
def test_predictions_match_the_simulated_truth(name: str) -> None:
    pop = population(SETS[name], seed=20 + list(SETS).index(name))
    x, t_x, T, _ = pop.summaries(END)
    fitted = fit_bgnbd(x, t_x, T)
    predicted = float(fitted.conditional_expected_purchases(26, x, t_x, T).sum())
    assert predicted == pytest.approx(pop.expected_purchases(END, 26), rel=0.05)


def test_one_common_purchase_rate_is_a_boundary_answer() -> None:
    """Everyone buys every 3.3 weeks on average (the old demo): the likelihood rises towards
    r, alpha -> inf, and the fit answers there with the limiting model."""
    pop = population(BgNbd(r=1.0, alpha=1.0, a=0.8, b=2.4), seed=30, same_rate=0.3)
    x, t_x, T, m = pop.summaries(END)
    fitted = fit_bgnbd(x, t_x, T)
    assert fitted.boundary == ("r,alpha -> inf",)
    assert fitted.r / fitted.alpha == pytest.approx(0.3, rel=0.05)  # the common rate
    for horizon in (4, 26, 52):
        predicted = float(fitted.conditional_expected_purchases(horizon, x, t_x, T).sum())
        assert predicted == pytest.approx(pop.expected_purchases(END, horizon), rel=0.05)
    spend = fit_gamma_gamma(x, m)
    assert spend.boundary == ()


def test_buyers_like_clockwork_who_never_stop_are_a_boundary_answer() -> None:
    """Every customer buys every 7 days until the end: less varied than any Poisson rate, and
    nobody drops out."""
    starts = np.random.default_rng(33).integers(0, 200, 60)
    x = (260 - starts) // 7
    fitted = fit_bgnbd(x, x.astype(float), (260 - starts) / 7)
    rate, dropout = fitted.boundary
    assert rate == "r,alpha -> inf" and dropout in ("a -> 0", "b -> inf")  # either way: none
    assert fitted.r / fitted.alpha == pytest.approx(1.0, rel=0.05)  # one purchase a week
    assert np.all(fitted.p_alive(x, x.astype(float), (260 - starts) / 7) > 0.99)


def test_one_common_mean_spend_is_a_boundary_answer() -> None:
    pop = population(SETS["cdnow"], seed=31)
    x, _, _, _ = pop.summaries(END)
    rng = np.random.default_rng(32)
    # every transaction Gamma(6.25, rate 0.2): mean 31.25 for everyone
    m = np.array([rng.gamma(6.25, 5.0, int(n)).mean() if n else 0.0 for n in x])
    fitted = fit_gamma_gamma(x, m)
    assert "q,gamma -> inf" in fitted.boundary
    assert fitted.population_mean_spend == pytest.approx(31.25, rel=0.02)


def test_no_repeat_buyer_is_still_a_fit_error() -> None:
    with pytest.raises(FitError, match="repeat buyers"):
        fit_bgnbd([0] * 100, [0.0] * 100, [10.0] * 100)
