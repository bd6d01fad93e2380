"""`touchline report conversion`: the table it prints from a conversion API answer."""

from touchline.reports.conversion import duration, table


def row(channel: str, entered: int, converted: int, credited: float) -> dict[str, object]:
    return {
        "channel": channel,
        "entered": entered,
        "converted": converted,
        "rate": converted / entered if entered else None,
        "median_seconds": 3 * 86_400.0 if converted else None,
        "p90_seconds": 7_200.0 if converted else None,
        "credited_conversions": credited,
        "credited_revenue": 10 * credited,
    }


def test_one_line_per_channel_then_the_total() -> None:
    text = table(
        {
            "from_stage": "engaged",
            "to_stage": "first_purchase",
            "model": "linear",
            "lookback_days": 30.0,
            "since": "2026-10-01T00:00:00+00:00",
            "until": "2026-11-01T00:00:00+00:00",
            "channels": [row("web", 4, 1, 1.5), row("email", 0, 0, 0.5)],
            "total": row("total", 4, 1, 2.0),
            "unattributed": 0.0,
        }
    )
    lines = text.splitlines()
    assert lines[0] == (
        "Conversion engaged -> first_purchase, model linear (lookback 30 days), "
        "entries 2026-10-01 .. 2026-11-01"
    )
    assert lines[3].split() == ["web", "4", "1", "25.0%", "3.0d", "2.0h", "1.50", "15.00"]
    assert lines[4].split() == ["email", "0", "0", "-", "-", "-", "0.50", "5.00"]
    assert lines[5].split()[:3] == ["total", "4", "1"]
    assert lines[-1].endswith(": 0")


def test_durations_in_the_largest_whole_unit() -> None:
    assert [duration(s) for s in (None, 42, 90, 5400, 200_000)] == [
        "-",
        "42s",
        "1.5m",
        "1.5h",
        "2.3d",
    ]
