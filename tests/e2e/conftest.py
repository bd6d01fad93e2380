"""The embedded stack as a user runs it: `touchline up` as a process on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import wait_for
from touchline.broker import free_port

TOUCHLINE = str(Path(sys.executable).parent / "touchline")


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        self.ports = {name: free_port() for name in ("BROKER", "INGEST", "LIFECYCLE", "SCORING")}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")},
            "TOUCHLINE_DATA_DIR": str(tmp_path / "var"),
            **{f"TOUCHLINE_{name}_PORT": str(port) for name, port in self.ports.items()},
        }
        self.output = tmp_path / "up.out"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> subprocess.Popen[bytes]:
        with self.output.open("wb") as out:
            return subprocess.Popen(
                [TOUCHLINE, "up"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def start_and_wait(
        self, what: str = "touchline up to print its banner"
    ) -> subprocess.Popen[bytes]:
        """Start `touchline up` (its output replaces the last run's) and wait for its banner."""
        process = self.start()
        try:
            wait_for(
                lambda: process.poll() is None and "Ctrl-C" in self.output.read_text(),
                bool,
                120,
                what,
            )
        except BaseException:
            stop(process, 120)
            raise
        return process


def ctrl_c(process: subprocess.Popen[bytes], timeout_s: float = 120) -> int:
    """Ctrl-C `touchline up`; its exit code once it has stopped."""
    process.send_signal(signal.SIGINT)
    return process.wait(timeout_s)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Ctrl-C the stack if it still runs; kill it if it is not gone within the timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()  # its children get SIGTERM from the kernel (die_with_parent)
            process.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Stack, subprocess.Popen[bytes]]]:
    s = Stack(tmp_path)
    process = s.start_and_wait()
    try:
        yield s, process
    finally:
        stop(process)  # the test failed before its Ctrl-C: stop the stack cleanly
