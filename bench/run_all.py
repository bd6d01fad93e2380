"""`make bench`: every benchmark in turn, each beside its raw-Kafka baseline; their output goes to
the terminal and, with the date, commit and machine, into the generated section of
bench/RESULTS.md (the hand-written history around it is kept)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = [
    ["bench.ingest"],
    ["bench.ingest", "--workers", "2", "--connections", "8"],
    ["bench.freshness"],
    ["bench.lifecycle", "--postgres"],
    ["bench.lifecycle_instructions"],
    ["bench.scoring", "--postgres"],
    ["bench.conversion", "--postgres"],
    ["bench.memory"],
]
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- make bench: generated from here -->"
END = "<!-- make bench: generated up to here -->"


def run(module: str, args: list[str]) -> str:
    """Run one benchmark, echoing its output; returns the lines a reader wants (not the JSON)."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    kept = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        if not line.startswith("{"):
            kept.append(line)
    if proc.wait() != 0:
        raise SystemExit(
            f"{module} failed with exit code {proc.returncode}: run `.venv/bin/python -m {module}` "
            "alone to see its errors"
        )
    return "".join(kept)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024 / 1024:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def section(outputs: list[tuple[str, str]]) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    parts = [
        BEGIN,
        "## Latest `make bench` run",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or 'unknown'}, {machine()}.",
    ]
    for command, output in outputs:
        parts += ["", f"`.venv/bin/python -m {command}`", "", "```", output.rstrip(), "```"]
    return "\n".join([*parts, END])


def write(outputs: list[tuple[str, str]]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    generated = section(outputs)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{generated}\n{body}"
    RESULTS.write_text(text)


def main() -> int:
    outputs = []
    for module, *args in BENCHMARKS:
        print(f"== {module} {' '.join(args)}", flush=True)
        outputs.append((" ".join([module, *args]), run(module, args)))
    write(outputs)
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
