"""The CDNOW sample through the running stack: Segment imports over HTTP -> Kafka -> scoring ->
refit as of the end of the calibration period -> the published BG/NBD model."""

from __future__ import annotations

import subprocess
import uuid
from collections import defaultdict
from datetime import date

import httpx
import pytest

from shared.settings import DEV_ADMIN_TOKEN, DEV_READ_TOKEN, DEV_WRITE_KEY
from tests.e2e.conftest import Stack
from tests.support import cdnow_events
from tests.support.pipeline import wait_for

pytestmark = pytest.mark.e2e
READ = {"Authorization": f"Bearer {DEV_READ_TOKEN}"}


def test_cdnow_through_ingest_gives_the_published_model(
    stack: tuple[Stack, subprocess.Popen[bytes]],
) -> None:
    s, _ = stack
    rows = cdnow_events.calibration()
    prefix = uuid.uuid4().hex[:6]
    calls = cdnow_events.segment_calls(rows, prefix)
    with httpx.Client(base_url=s.url("INGEST"), auth=(DEV_WRITE_KEY, ""), timeout=30) as ingest:
        for start in range(0, len(calls), 500):
            response = ingest.post("/v1/import", json={"batch": calls[start : start + 500]})
            assert response.status_code == 200, response.text
            assert response.json()["rejected"] == []

    with httpx.Client(base_url=s.url("SCORING"), headers=READ, timeout=60) as scoring:
        wait_for(
            lambda: scoring.get("/v1/segments").json()["scored_customers"],
            lambda n: n >= 2357,
            120,
            "every CDNOW customer scored",
        )
        refit = scoring.post(
            "/v1/model/refit",
            json={"observation_end": "1997-09-30"},
            headers={"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"},
        )
        assert refit.status_code == 200, refit.text
        model = scoring.get("/v1/model").json()
        assert model["observation_end"] == "1997-09-30"
        assert model["n_customers"] == 2357
        for name, published in (("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)):
            assert model["bgnbd"][name] == pytest.approx(published, rel=0.01)
        assert model["gamma_gamma"]["gamma"] == pytest.approx(15.44, rel=0.01)
        assert model["boundary"] == [] and model["last_attempt"]["status"] == "fitted"

        # One customer's scores against a direct computation from the file.
        customer = rows[0].customer
        days: defaultdict[date, float] = defaultdict(float)
        for t in rows:
            if t.customer == customer:
                days[t.day] += t.dollars
        body = scoring.get(
            f"/v1/customers/{prefix}-{customer}/scores", params={"as_of": "1997-09-30"}
        ).json()
        ordered = sorted(days)
        assert body["purchases"]["distinct_purchase_days"] == len(ordered)
        assert body["purchases"]["revenue_total"] == pytest.approx(sum(days.values()), abs=0.01)
        assert body["rfm"]["recency_days"] == (date(1997, 9, 30) - ordered[-1]).days
        x = len(ordered) - 1
        t_x = (ordered[-1] - ordered[0]).days / 7
        T = (date(1997, 9, 30) - ordered[0]).days / 7
        bg = model["bgnbd"]
        r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
        odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
        assert body["value"]["p_alive"] == pytest.approx(1 / (1 + odds), rel=1e-6)
