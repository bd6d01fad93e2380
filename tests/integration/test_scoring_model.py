"""The value model in service on both databases: a good fit stays in use when a refit fails
(recorded and shown), refits outside the data's time range are refused, and the validation
report of the full CDNOW sample is the paper's comparison."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.test_scoring import ADMIN, READ, drained, order, scoring
from tests.support import cdnow_events
from tests.support.cdnow import transactions
from tests.support.pipeline import publish
from touchline.broker import EmbeddedBroker


def test_a_failed_refit_leaves_the_good_model_in_service(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    events = cdnow_events.touchpoints(transactions(), prefix=uuid.uuid4().hex[:6])
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, db_url) as (consumer, client):
        drained(consumer, len(events))
        good = client.post("/v1/model/refit", json={"observation_end": "1997-09-30"}, headers=ADMIN)
        assert good.status_code == 200, good.text
        assert good.json()["status"] == "fitted" and good.json()["boundary"] == []
        customer = events[0].user_id
        scores = f"/v1/customers/{customer}/scores?as_of=1997-09-30"
        before = client.get(scores, headers=READ).json()["value"]
        channels_before = client.get("/v1/value/channels", headers=READ).json()
        assert before["predicted_clv"] > 0

        # an admin typo: refused, nothing recorded
        typo = client.post("/v1/model/refit", json={"observation_end": "1900-01-01"}, headers=ADMIN)
        assert typo.status_code == 400 and "time range" in typo.json()["detail"]
        assert client.get("/v1/model", headers=READ).json()["last_attempt"]["status"] == "fitted"
        # a day with first purchases only: no data a model can be fitted to, a recorded failure
        bad = client.post("/v1/model/refit", json={"observation_end": "1997-01-01"}, headers=ADMIN)
        assert bad.status_code == 200
        assert bad.json()["status"] == "failed" and "repeat buyers" in bad.json()["error"]

        model = client.get("/v1/model", headers=READ).json()
        assert model["status"] == "fitted" and model["observation_end"] == "1997-09-30"
        assert model["bgnbd"]["r"] == pytest.approx(0.243, rel=0.01)
        assert model["last_attempt"]["status"] == "failed"
        assert model["last_attempt"]["observation_end"] == "1997-01-01"
        assert model["last_attempt"]["error"] == bad.json()["error"]
        assert model["last_attempt"]["fitted_at"] > model["fitted_at"]
        after = client.get(scores, headers=READ).json()["value"]
        assert after == before  # predictions are the good model's
        channels_after = client.get("/v1/value/channels", headers=READ).json()
        assert channels_after["model_status"] == "fitted"
        assert channels_after["channels"] == channels_before["channels"]


def test_validation_report_of_the_cdnow_sample(own_broker: EmbeddedBroker, db_url: str) -> None:
    events = cdnow_events.touchpoints(transactions(), prefix=uuid.uuid4().hex[:6])
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, db_url) as (consumer, client):
        drained(consumer, len(events))
        params = {"calibration_end": "1997-09-30", "holdout_end": "1998-06-30"}
        assert client.get("/v1/model/validation", params=params).status_code == 401
        report = client.get("/v1/model/validation", params=params, headers=READ)
        assert report.status_code == 200, report.text
        body = report.json()
        assert (body["customers"], body["calibration_repeat_purchases"]) == (2357, 2457)
        assert body["holdout_actual"] == 1882
        assert body["holdout_predicted"] == pytest.approx(1654, rel=0.02)
        assert body["bgnbd"]["r"] == pytest.approx(0.243, rel=0.01)
        assert [g["label"] for g in body["by_channel"]] == ["other"]
        assert len(body["weeks"]) == 78 and body["weeks"][-1]["cumulative_actual"] == 4339
        assert body["weekly_mae"] > 0
        for wrong in (
            {"calibration_end": "1900-01-01"},
            {"calibration_end": "1998-06-30", "holdout_end": "1997-09-30"},
        ):
            refused = client.get("/v1/model/validation", params=wrong, headers=READ)
            assert refused.status_code == 400, refused.text


def test_default_validation_window(own_broker: EmbeddedBroker, sqlite_url: str) -> None:
    """Without dates: calibration halfway from the first purchase to today."""
    events = cdnow_events.touchpoints(transactions(), prefix=uuid.uuid4().hex[:6])
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, sqlite_url) as (consumer, client):
        drained(consumer, len(events))
        body = client.get("/v1/model/validation", headers=READ).json()
        assert body["customers"] == 2357
        assert body["calibration_end"] > "2010-01-01"  # halfway from 1997 to today
        assert body["holdout_actual"] == 0  # nothing was bought after 1998


def test_a_boundary_fit_is_recorded_and_predicts(own_broker: EmbeddedBroker, db_url: str) -> None:
    """Sixty customers who buy once a week like clockwork from their start until today: no
    heterogeneity in the purchase rate and no dropout, so the fit answers at the boundary."""
    run = uuid.uuid4().hex[:6]
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    events = [
        order(f"{run}-c{i}", f"o{k}", today - timedelta(days=7 * k), 20.0 + 5 * (i % 7) + k % 3)
        for i in range(60)
        for k in range(4 + (i * 37) % 30)
    ]
    publish(own_broker.bootstrap, events)
    with scoring(own_broker.bootstrap, db_url) as (consumer, client):
        drained(consumer, len(events))
        refit = client.post("/v1/model/refit", headers=ADMIN)
        assert refit.status_code == 200, refit.text
        model = client.get("/v1/model", headers=READ).json()
        assert model["status"] == "fitted" and model["n_customers"] == 60
        assert model["boundary"][0] == "r,alpha -> inf"
        assert model["bgnbd"]["r"] / model["bgnbd"]["alpha"] == pytest.approx(1.0, rel=0.05)
        value = client.get(f"/v1/customers/{run}-c1/scores", headers=READ).json()["value"]
        assert value["p_alive"] > 0.99
        assert value["expected_purchases"] == pytest.approx(365 / 7, rel=0.05)  # a year ahead
