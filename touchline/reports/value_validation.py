"""`touchline report value-validation`: the value model's calibration/holdout check in the
terminal (GET /v1/model/validation of a running scoring service).

    touchline report value-validation --calibration-end 1997-09-30 --holdout-end 1998-06-30
"""

from __future__ import annotations

import argparse
from typing import Any

from touchline.reports import add_service_arguments, fetch


def table(report: dict[str, Any]) -> str:
    """Totals, the holdout by calibration repeat purchases and by channel, and the weeks."""
    bg = report["bgnbd"]
    lines = [
        f"BG/NBD fitted on purchases up to {report['calibration_end']}: r={bg['r']:.4g} "
        f"alpha={bg['alpha']:.4g} a={bg['a']:.4g} b={bg['b']:.4g}"
        + (f" (boundary: {', '.join(report['boundary'])})" if report["boundary"] else ""),
        f"holdout to {report['holdout_end']} ({report['holdout_weeks']:.1f} weeks), "
        f"{report['customers']:,} customers, {report['calibration_repeat_purchases']:,} repeat "
        "purchases in calibration",
        f"holdout purchases: actual {report['holdout_actual']:,}, predicted "
        f"{report['holdout_predicted']:,.0f} ({_off(report)})",
        f"mean absolute error: {report['weekly_mae']:.2f} purchases per week, "
        f"{report['customer_mae']:.3f} per customer",
    ]
    for title, groups in (
        ("calibration repeat purchases", report["by_repeat_purchases"]),
        ("acquisition channel", report["by_channel"]),
    ):
        lines += ["", f"{title:<30} {'customers':>9} {'actual':>8} {'predicted':>9}"]
        lines += [
            f"{g['label']:<30} {g['customers']:>9} {g['actual']:>8.3f} {g['predicted']:>9.3f}"
            for g in groups
        ]
    lines += ["", f"{'week from':<10} {'actual':>7} {'predicted':>9} {'cum. actual':>11} "
              f"{'cum. predicted':>14}"]  # fmt: skip
    lines += [
        f"{w['start']:<10} {w['actual']:>7} {w['predicted']:>9.1f} {w['cumulative_actual']:>11} "
        f"{w['cumulative_predicted']:>14.1f}"
        for w in report["weeks"]
    ]
    return "\n".join(lines)


def _off(report: dict[str, Any]) -> str:
    if not report["holdout_actual"]:
        return "no holdout purchases"
    return f"{100 * (report['holdout_predicted'] / report['holdout_actual'] - 1):+.1f}%"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="touchline report value-validation", description=__doc__)
    parser.add_argument("--calibration-end", help="YYYY-MM-DD (default: halfway)")
    parser.add_argument("--holdout-end", help="YYYY-MM-DD (default: today)")
    add_service_arguments(parser, "scoring", "http://127.0.0.1:8002")
    args = parser.parse_args(argv)
    params = {"calibration_end": args.calibration_end, "holdout_end": args.holdout_end}
    report = fetch("scoring", args.url, "/v1/model/validation", args.token, params, 300)
    if report is None:
        return 1
    print(table(report))
    return 0
