"""`touchline report conversion`: the conversion API's per-channel table in the terminal.

    touchline report conversion --from engaged --to first_purchase --model linear

Asks a running lifecycle service (`--url`, default TOUCHLINE_LIFECYCLE_URL or the local dev
stack) with a read token (`--token`, default TOUCHLINE_READ_TOKEN or the dev stack's).
"""

from __future__ import annotations

import argparse
from typing import Any

from services.lifecycle.attribution import MODELS
from touchline.reports import add_service_arguments, fetch


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def table(report: dict[str, Any]) -> str:
    """The report as aligned text: one row per channel, then the total."""
    header = (
        f"Conversion {report['from_stage']} -> {report['to_stage']}, model {report['model']} "
        f"(lookback {report['lookback_days']:g} days), entries {report['since'][:10]} .. "
        f"{report['until'][:10]}"
    )
    columns = ("channel", "entered", "converted", "rate", "median", "p90", "credited", "revenue")
    lines = [header, "", "{:<8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>9} {:>11}".format(*columns)]
    for row in [*report["channels"], report["total"]]:
        rate = "-" if row["rate"] is None else f"{100 * row['rate']:.1f}%"
        lines.append(
            f"{row['channel']:<8} {row['entered']:>8} {row['converted']:>9} {rate:>7} "
            f"{duration(row['median_seconds']):>7} {duration(row['p90_seconds']):>7} "
            f"{row['credited_conversions']:>9.2f} {row['credited_revenue']:>11.2f}"
        )
    lines.append(f"unattributed conversions (no touch in the lookback): {report['unattributed']:g}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="touchline report conversion", description=__doc__)
    parser.add_argument("--from", dest="from_stage", required=True, help="stage entered")
    parser.add_argument("--to", dest="to_stage", required=True, help="a later stage")
    parser.add_argument("--model", default="linear", choices=MODELS)
    parser.add_argument("--since", help="entries from (ISO 8601; default 30 days ago)")
    parser.add_argument("--until", help="entries before (ISO 8601; default now)")
    parser.add_argument("--lookback-days", type=float)
    add_service_arguments(parser, "lifecycle", "http://127.0.0.1:8001")
    args = parser.parse_args(argv)
    params = {
        "from": args.from_stage,
        "to": args.to_stage,
        "model": args.model,
        "since": args.since,
        "until": args.until,
        "lookback_days": args.lookback_days,
    }
    report = fetch("lifecycle", args.url, "/v1/conversion", args.token, params, 30)
    if report is None:
        return 1
    print(table(report))
    return 0
