"""The calibration/holdout report on CDNOW reproduces the papers' comparison (Fader, Hardie & Lee
2005): 39 weeks of calibration to 1997-09-30, 39 weeks of holdout to 1998-06-30, purchases as
distinct days, the model fitted on the calibration period."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest

from services.scoring.btyd import BgNbd, FitError
from services.scoring.validation import Validation, validate
from tests.support.cdnow import transactions

PUBLISHED = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)


def purchase_days() -> list[tuple[str, list[date]]]:
    days: defaultdict[str, set[date]] = defaultdict(set)
    for t in transactions():
        days[t.customer].add(t.day)
    return [(customer, sorted(d)) for customer, d in sorted(days.items())]


@pytest.fixture(scope="module")
def report() -> Validation:
    channels = {c: ("web" if int(c) % 2 else "email") for c, _ in purchase_days()}
    return validate(purchase_days(), date(1997, 9, 30), date(1998, 6, 30), channels)


def test_the_cohort_and_what_it_did(report: Validation) -> None:
    assert report.customers == 2357
    assert report.calibration_repeat_purchases == 2457
    assert report.holdout_actual == 1882
    assert report.holdout_weeks == 39
    actual = {g.label: g.actual for g in report.by_repeat_purchases}
    for label, mean in (("0", 0.237), ("1", 0.697), ("2", 1.393), ("3", 1.560)):
        assert actual[label] == pytest.approx(mean, abs=0.0005)


def test_the_fitted_model_predicts_as_the_paper_reports(report: Validation) -> None:
    assert report.model.r == pytest.approx(PUBLISHED.r, rel=0.01)
    assert report.holdout_predicted == pytest.approx(1654, rel=0.02)  # 12% under the 1,882
    predicted = {g.label: g.predicted for g in report.by_repeat_purchases}
    for label, mean in (("0", 0.225), ("1", 0.523), ("2", 1.044), ("3", 1.520)):
        assert predicted[label] == pytest.approx(mean, rel=0.02)
    assert [g.label for g in report.by_repeat_purchases] == [*"0123456", "7+"]
    assert sum(g.customers for g in report.by_repeat_purchases) == 2357


def test_the_published_parameters_give_the_same_report() -> None:
    published = validate(purchase_days(), date(1997, 9, 30), date(1998, 6, 30), model=PUBLISHED)
    assert published.holdout_predicted == pytest.approx(1654, abs=1)
    predicted = [g.predicted for g in published.by_repeat_purchases[:4]]
    assert predicted == pytest.approx([0.225, 0.523, 1.044, 1.520], abs=0.0006)


def test_tracking_plot_weeks_add_up(report: Validation) -> None:
    weeks = report.weeks
    assert len(weeks) == 78 and weeks[0].start == date(1997, 1, 1)
    assert weeks[38].cumulative_actual == 2457  # end of calibration
    assert weeks[-1].cumulative_actual == 2457 + 1882
    holdout_predicted = weeks[-1].cumulative_predicted - weeks[38].cumulative_predicted
    # the paper's tracking plot: close over the calibration period, about 12% under in the
    # holdout, as the sum of conditional expectations is
    assert weeks[38].cumulative_predicted == pytest.approx(2457, rel=0.02)
    assert holdout_predicted == pytest.approx(report.holdout_predicted, rel=0.02)
    assert sum(w.predicted for w in weeks) == pytest.approx(weeks[-1].cumulative_predicted)
    errors = [abs(w.actual - w.predicted) for w in weeks[39:]]
    assert report.weekly_mae == pytest.approx(sum(errors) / 39)
    assert 0 < report.weekly_mae < 20 and 0 < report.customer_mae < 1.5


def test_by_channel_adds_up_to_the_cohort(report: Validation) -> None:
    assert [g.label for g in report.by_channel] == ["email", "web"]
    total = sum(g.customers * g.actual for g in report.by_channel)
    assert total == pytest.approx(1882)
    predicted = sum(g.customers * g.predicted for g in report.by_channel)
    assert predicted == pytest.approx(report.holdout_predicted)


def test_a_holdout_before_the_calibration_end_is_refused() -> None:
    with pytest.raises(FitError, match="holdout"):
        validate(purchase_days(), date(1997, 9, 30), date(1997, 9, 1))
