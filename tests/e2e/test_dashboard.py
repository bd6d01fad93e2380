"""The ops dashboard in a real browser (Debian's chromium driven by Playwright) against a
`touchline up` stack fed by `touchline demo`: the per-channel numbers on the page are the API's,
and the demo's value model is fitted, predicts for every channel and is validated on the page."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from shared.events import CHANNELS
from shared.settings import DEV_READ_TOKEN
from tests.e2e.conftest import TOUCHLINE, Stack
from tests.support.pipeline import ready, wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("TOUCHLINE_TEST_ARTIFACTS", Path(__file__).parents[2] / "var"))


def cells(page: Page, table: str) -> dict[str, list[str]]:
    rows = page.locator(f"#{table} tbody tr")
    return {
        rows.nth(i).get_attribute("data-channel") or "": rows.nth(i).locator("td").all_inner_texts()
        for i in range(rows.count())
    }


def test_dashboard_shows_the_apis_per_channel_numbers(stack: tuple[Stack, object]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    s, _ = stack
    for name in ("INGEST", "LIFECYCLE", "SCORING"):
        wait_for(lambda n=name: ready(s.url(n)), bool, 60, f"{name} ready")  # type: ignore[misc]
    demo = subprocess.run(
        [TOUCHLINE, "demo", "--people", "800", "--ingest-url", s.url("INGEST"),
         "--lifecycle-url", s.url("LIFECYCLE"), "--scoring-url", s.url("SCORING")],
        env=s.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lifecycle = s.url("LIFECYCLE")
    assert "scoring model refit: HTTP 200" in demo.stdout, demo.stdout
    read = {"Authorization": f"Bearer {DEV_READ_TOKEN}"}
    model = httpx.get(f"{s.url('SCORING')}/v1/model", headers=read).json()
    assert model["status"] == "fitted", model
    value = httpx.get(f"{s.url('SCORING')}/v1/value/channels", headers=read).json()
    assert [c["channel"] for c in value["channels"]] == sorted(CHANNELS)
    for channel in value["channels"]:
        assert channel["buyers"] > 0 and channel["predicted_clv"] > 0, value
    validation = httpx.get(
        f"{s.url('SCORING')}/v1/model/validation", headers=read, timeout=60
    ).json()
    sent = int(re.search(r"sent ([\d,]+) events for", demo.stdout)[1].replace(",", ""))  # type: ignore[index]
    live = httpx.get(f"{lifecycle}/v1/live", headers={"Authorization": f"Bearer {DEV_READ_TOKEN}"})
    assert sum(live.json()["applied"].values()) == sent  # the demo waited for all of them

    page_source = httpx.get(f"{lifecycle}/dashboard")
    assert page_source.status_code == 200
    assert DEV_READ_TOKEN not in page_source.text  # no secret in the page
    assert "default-src 'self'" in page_source.headers["content-security-policy"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(f"{lifecycle}/dashboard")
        page.fill("#token", DEV_READ_TOKEN)
        page.click("#login-button")
        page.wait_for_selector("#conversion-table tbody tr[data-channel=total]")
        page.wait_for_selector("#value-table tbody tr[data-channel=web]")
        page.wait_for_selector("#validation-chart svg polyline.series-predicted")
        value_shown = cells(page, "value-table")
        model_text = page.inner_text("#value-model")
        validation_text = page.inner_text("#validation-summary")
        actual_points = page.get_attribute("#validation-chart polyline.series-actual", "points")
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('Up')")
        # The demo spans a year; the pickers redraw the table for that window and another model.
        page.select_option("#window", "365")
        page.select_option("#model", "position_based")
        table = page.locator("#conversion-table")

        def redrawn() -> bool:
            since, until = (table.get_attribute(f"data-{k}") or "" for k in ("since", "until"))
            span = datetime.fromisoformat(until) - datetime.fromisoformat(since)
            return table.get_attribute("data-model") == "position_based" and span.days >= 364

        wait_for(redrawn, bool, 30, "the table for the picked window and model")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        shown = cells(page, "conversion-table")
        asked = {k: table.get_attribute(f"data-{k}") for k in ("from", "to", "model")}
        window = {k: table.get_attribute(f"data-{k}") for k in ("since", "until")}
        stored = page.evaluate("[sessionStorage.length, localStorage.length]")
        browser.close()

    assert not failed, failed  # everything the page loads comes from the service itself
    assert list(value_shown) == [c["channel"] for c in value["channels"]]
    for row in value["channels"]:
        _, buyers, revenue, expected, clv, per_buyer = value_shown[row["channel"]]
        assert int(buyers.replace(",", "")) == row["buyers"]
        assert float(revenue.replace(",", "")) == pytest.approx(row["historical_value"], abs=0.01)
        assert float(expected.replace(",", "")) == pytest.approx(row["expected_purchases"], abs=0.1)
        assert float(clv.replace(",", "")) == pytest.approx(row["predicted_clv"], abs=0.01)
        assert float(per_buyer.replace(",", "")) == pytest.approx(
            row["predicted_clv"] / row["buyers"], abs=0.01
        )
    assert f"on purchases {model['data_from']} … {model['observation_end']}" in model_text
    assert model["fitted_at"][:10] in model_text
    assert f"actual {validation['holdout_actual']:,}" in validation_text
    assert f"Mean absolute error {validation['weekly_mae']:,.2f} purchases per week" in (
        validation_text
    )
    assert actual_points is not None
    assert len(actual_points.split()) == len(validation["weeks"])  # one point per week
    printed = subprocess.run(
        [TOUCHLINE, "report", "value-validation", "--url", s.url("SCORING"),
         "--token", DEV_READ_TOKEN],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert f"holdout purchases: actual {validation['holdout_actual']:,}, predicted " in (
        printed.stdout
    )
    assert f"{validation['weekly_mae']:.2f} purchases per week" in printed.stdout
    assert stored == [1, 0]  # the token is kept in the tab's session only
    assert asked == {"from": "engaged", "to": "first_purchase", "model": "position_based"}
    report = httpx.get(
        f"{lifecycle}/v1/conversion",
        params={**asked, **window},
        headers={"Authorization": f"Bearer {DEV_READ_TOKEN}"},
    ).json()
    assert list(shown) == [*CHANNELS, "total"]
    for row in [*report["channels"], report["total"]]:
        _, entered, converted, rate, *_, credited, revenue = shown[row["channel"]]
        assert int(entered.replace(",", "")) == row["entered"]
        assert int(converted.replace(",", "")) == row["converted"]
        assert rate == f"{100 * row['rate']:.1f}%"
        assert float(credited.replace(",", "")) == pytest.approx(row["credited_conversions"], 0.01)
        assert float(revenue.replace(",", "")) == pytest.approx(row["credited_revenue"], abs=0.01)
    cli = subprocess.run(
        [TOUCHLINE, "report", "conversion", "--from", "engaged", "--to", "first_purchase",
         "--model", "position_based", "--since", window["since"] or "",
         "--until", window["until"] or "",
         "--url", lifecycle, "--token", DEV_READ_TOKEN],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    total = next(line.split() for line in cli.stdout.splitlines() if line.startswith("total"))
    assert total[1:3] == [str(report["total"]["entered"]), str(report["total"]["converted"])]
    assert total[-2:] == [
        f"{report['total']['credited_conversions']:.2f}",
        f"{report['total']['credited_revenue']:.2f}",
    ]
    busy = [c for c in CHANNELS if report["channels"][CHANNELS.index(c)]["converted"] > 0]
    assert len(busy) >= 4, report  # the demo makes every number non-trivial
    assert report["total"]["credited_conversions"] > 0 and report["total"]["credited_revenue"] > 0
