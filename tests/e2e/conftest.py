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


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Stack, subprocess.Popen[bytes]]]:
    s = Stack(tmp_path)
    process = s.start()
    try:
        wait_for(
            lambda: process.poll() is None and "Ctrl-C" in s.output.read_text(),
            bool,
            120,
            "touchline up to print its banner",
        )
        yield s, process
    finally:
        if process.poll() is None:  # the test failed before its Ctrl-C: stop the stack cleanly
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()  # its children get SIGTERM from the kernel (die_with_parent)
                process.wait()
