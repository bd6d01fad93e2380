"""BG/NBD and Gamma-Gamma reproduce the published CDNOW numbers (Fader, Hardie & Lee 2005),
from the raw sample transactions folded through the purchase counters."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

import numpy as np
import pytest
from scipy import special

from services.scoring.btyd import (
    BgNbd,
    FitError,
    GammaGamma,
    fit_bgnbd,
    fit_gamma_gamma,
    hyp2f1,
    predicted_clv,
)
from services.scoring.counters import PurchaseBook
from tests.support.cdnow import transactions

CALIBRATION_END = date(1997, 9, 30)


@pytest.fixture(scope="module")
def summaries() -> dict[str, np.ndarray]:
    book = PurchaseBook({}, {}, {})
    seen: defaultdict[str, int] = defaultdict(int)
    for t in transactions():
        if t.day <= CALIBRATION_END:
            seen[t.customer] += 1
            at = datetime(t.day.year, t.day.month, t.day.day, tzinfo=UTC)
            book.complete(t.customer, f"{t.customer}-{seen[t.customer]}", at, t.dollars)
    rows = [c.summary(CALIBRATION_END) for c in book.counters.values()]
    assert all(rows)
    return {
        name: np.array([getattr(row, name) for row in rows if row])
        for name in ("x", "t_x", "T", "mean_repeat_spend")
    }


@pytest.fixture(scope="module")
def bgnbd(summaries: dict[str, np.ndarray]) -> BgNbd:
    return fit_bgnbd(summaries["x"], summaries["t_x"], summaries["T"])


def test_cdnow_sample_shape(summaries: dict[str, np.ndarray]) -> None:
    assert len(summaries["x"]) == 2357
    assert int((summaries["x"] > 0).sum()) == 946


def test_bgnbd_parameters_and_log_likelihood(bgnbd: BgNbd) -> None:
    for value, published in (
        (bgnbd.r, 0.243),
        (bgnbd.alpha, 4.414),
        (bgnbd.a, 0.793),
        (bgnbd.b, 2.426),
    ):
        assert value == pytest.approx(published, rel=0.01)
    assert bgnbd.log_likelihood == pytest.approx(-9582.4, abs=0.5)


def test_conditional_expectation_of_the_papers_customer(bgnbd: BgNbd) -> None:
    expected = bgnbd.conditional_expected_purchases(39, 2, 30.43, 38.86)
    assert float(expected) == pytest.approx(1.226, abs=0.002)


def test_unconditional_expectation_at_78_weeks(bgnbd: BgNbd) -> None:
    assert bgnbd.expected_purchases(78) == pytest.approx(1.8576, abs=0.0005)


def test_p_alive_is_one_without_repeats_and_falls_with_silence(bgnbd: BgNbd) -> None:
    assert float(bgnbd.p_alive(0, 0, 38)) == 1.0
    recent, quiet = bgnbd.p_alive([3, 3], [37.0, 5.0], [38.0, 38.0])
    assert 0 < quiet < recent <= 1


def test_gamma_gamma_on_the_repeat_buyers(summaries: dict[str, np.ndarray]) -> None:
    model = fit_gamma_gamma(summaries["x"], summaries["mean_repeat_spend"])
    assert model.p == pytest.approx(6.25, rel=0.01)
    assert model.q == pytest.approx(3.74, rel=0.01)
    assert model.gamma == pytest.approx(15.44, rel=0.01)
    assert model.population_mean_spend == pytest.approx(35.17, abs=0.05)
    no_repeat, repeat = model.conditional_expected_spend([0, 4], [0.0, 100.0])
    assert no_repeat == pytest.approx(model.population_mean_spend)
    assert model.population_mean_spend < repeat < 100.0  # shrunk towards the population mean


def test_too_little_data_is_a_clear_fit_error() -> None:
    with pytest.raises(FitError, match="at least"):
        fit_bgnbd([0, 1], [0, 1], [5, 5])
    with pytest.raises(FitError, match="repeat buyers"):
        fit_gamma_gamma([0] * 50, [0.0] * 50)


def test_hypergeometric_matches_its_series() -> None:
    a, b, c, z = 2.2, 3.4, 5.1, 0.7
    series = sum(
        np.prod([(a + i) * (b + i) / ((c + i) * (i + 1)) for i in range(n)]) * z**n
        for n in range(400)
    )
    assert float(hyp2f1(a, b, c, z)) == pytest.approx(series, rel=1e-10)


def test_conditional_expectation_equals_the_direct_formula_and_survives_heavy_buyers(
    bgnbd: BgNbd,
) -> None:
    r, alpha, a, b = bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b
    x, t_x, T, t = 2, 30.43, 38.86, 39.0
    direct_tail = ((alpha + T) / (alpha + T + t)) ** (r + x) * float(
        hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    )
    odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    direct = (a + b + x - 1) / (a - 1) * (1 - direct_tail) / (1 + odds)
    assert float(bgnbd.conditional_expected_purchases(t, x, t_x, T)) == pytest.approx(direct)
    heavy = bgnbd.conditional_expected_purchases(52, 400, 38.0, 38.5)
    assert np.isfinite(heavy) and heavy > 100


def test_clv_grows_with_horizon_and_shrinks_with_discounting(bgnbd: BgNbd) -> None:
    args = (bgnbd, 40.0, 3, 30.0, 38.0)
    one_year = predicted_clv(*args, horizon_weeks=52, margin=1.0, annual_discount_rate=0.0)
    two_years = predicted_clv(*args, horizon_weeks=104, margin=1.0, annual_discount_rate=0.0)
    discounted = predicted_clv(*args, horizon_weeks=104, margin=1.0, annual_discount_rate=0.2)
    undiscounted_purchases = bgnbd.conditional_expected_purchases(104, 3, 30.0, 38.0)
    assert float(two_years) == pytest.approx(40.0 * float(undiscounted_purchases))
    assert 0 < float(one_year) < float(discounted) < float(two_years)
    half_margin = predicted_clv(*args, horizon_weeks=104, margin=0.5, annual_discount_rate=0.2)
    assert float(half_margin) == pytest.approx(float(discounted) / 2)


def test_gamma_gamma_model_values() -> None:
    model = GammaGamma(p=6.25, q=3.74, gamma=15.44)
    assert model.population_mean_spend == pytest.approx(6.25 * 15.44 / 2.74)


def test_expected_purchases_when_dropout_rates_are_all_alike() -> None:
    """A fit can put a and b in the millions (every customer with nearly the same dropout
    probability). Predictions must stay finite and continuous in that limit."""
    x, t_x, T = np.array([0, 2, 30]), np.array([0.0, 1.4, 50.0]), np.array([11.3, 14.7, 60.0])
    values = [
        BgNbd(1.43, 9.49, 1.24 * scale, 5.43 * scale).conditional_expected_purchases(52, x, t_x, T)
        for scale in (1e4, 1e6, 1e8)
    ]
    assert all(np.isfinite(v).all() for v in values)
    assert values[1] == pytest.approx(values[0], rel=1e-3)
    assert values[2] == pytest.approx(values[1], rel=1e-3)
    # ... and equal the untransformed formula, E = (a+b+x-1)/(a-1) * (1 - (1-z)^(r+x) *
    # 2F1(r+x, b+x; a+b+x-1; z)) * P(alive), where scipy can evaluate it.
    model = BgNbd(1.43, 9.49, 1.24e6, 5.43e6)
    z = 52 / (9.49 + T + 52)
    direct = (
        (1.24e6 + 5.43e6 + x - 1)
        / (1.24e6 - 1)
        * (1 - (1 - z) ** (1.43 + x) * special.hyp2f1(1.43 + x, 5.43e6 + x, 6.67e6 + x - 1, z))
    )
    assert np.isfinite(direct).all()
    assert values[1] == pytest.approx(direct * model.p_alive(x, t_x, T), rel=1e-9)
