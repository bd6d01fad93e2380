"""`touchline up`: the embedded dev stack (broker, migrations, the three services), one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from shared.broker import (
    EmbeddedBroker,
    MissingEmbeddedBroker,
    broker_binary,
    die_with_parent,
    port_in_use,
)
from shared.events import all_topics
from shared.kafka import ensure_topics
from shared.migrate import upgrade
from shared.privacy import republish_suppressions
from shared.settings import DEV_READ_TOKEN, DEV_WRITE_KEY, Settings

SERVICES = ("ingest", "lifecycle", "scoring")
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


class Stopped(Exception):
    pass


def _ports(settings: Settings) -> dict[str, int]:
    return {
        "TOUCHLINE_BROKER_PORT": settings.broker_port,
        "TOUCHLINE_INGEST_PORT": settings.ingest_port,
        "TOUCHLINE_LIFECYCLE_PORT": settings.lifecycle_port,
        "TOUCHLINE_SCORING_PORT": settings.scoring_port,
    }


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(children: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(children)
    with httpx.Client(timeout=2) as client:
        while pending:
            for child in list(pending):
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
                try:
                    if client.get(f"{child.url}/readyz").status_code == 200:
                        pending.remove(child)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f}s: {names}")
            time.sleep(0.2)


def _stop(children: list[Child], broker: EmbeddedBroker) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in time; killing it", file=sys.stderr)
            child.process.kill()
            child.process.wait()
    broker.stop()


def _banner(settings: Settings, children: list[Child]) -> str:
    urls = {c.name: c.url for c in children}
    ingest, lifecycle, scoring = urls["ingest"], urls["lifecycle"], urls["scoring"]
    return f"""
Touchline is up: broker 127.0.0.1:{settings.broker_port}, SQLite in {settings.data_dir}/

  ingest     {ingest}     API docs {ingest}/docs
  lifecycle  {lifecycle}     API docs {lifecycle}/docs
  scoring    {scoring}     API docs {scoring}/docs

  write key   {DEV_WRITE_KEY}   (HTTP Basic username, empty password)
  read token  {DEV_READ_TOKEN}  (Authorization: Bearer ...)
  logs        {settings.data_dir}/logs/

Send a first event:
  curl -u {DEV_WRITE_KEY}: -H 'Content-Type: application/json' \\
    -d '{{"userId": "first-customer", "event": "Signed Up", "properties": {{"plan": "free"}}}}' \\
    {ingest}/v1/track

Then read it back:
  curl -H 'Authorization: Bearer {DEV_READ_TOKEN}' {lifecycle}/v1/customers/first-customer
  curl -H 'Authorization: Bearer {DEV_READ_TOKEN}' {scoring}/v1/customers/first-customer/scores

Press Ctrl-C to stop everything.
"""


def up() -> int:
    os.environ.setdefault("TOUCHLINE_EMBEDDED", "true")
    settings = Settings()
    try:
        broker_binary()
    except MissingEmbeddedBroker as exc:
        print(f"touchline up: {exc}", file=sys.stderr)
        return 1
    busy = [f"{var}={port}" for var, port in _ports(settings).items() if port_in_use(port)]
    if busy:
        print(
            "touchline up: port already in use: " + ", ".join(busy) + "\n"
            "Another stack (or program) is running there. Stop it, or choose other ports with "
            "the variables named above and another TOUCHLINE_DATA_DIR.",
            file=sys.stderr,
        )
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Stopped

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    data_dir = settings.data_dir
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(settings.broker_port, logs / "broker.log")
    children: list[Child] = []
    code = 0
    try:
        print(f"starting the embedded broker on 127.0.0.1:{settings.broker_port} ...", flush=True)
        broker.start()
        ensure_topics(settings.kafka_bootstrap, all_topics(), settings.topic_partitions)
        print(f"migrating {settings.database_url} ...", flush=True)
        upgrade(settings.database_url)
        # The broker forgot every erasure: give it back the suppression list before ingest reads it.
        republish_suppressions(settings.database_url, settings.kafka_bootstrap)
        env = {**os.environ, "TOUCHLINE_EMBEDDED": "true"}
        executable = str(Path(sys.executable).parent / "touchline")
        for name in SERVICES:
            port = getattr(settings, f"{name}_port")
            log_path = logs / f"{name}.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [executable, "serve", name],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                    preexec_fn=die_with_parent,
                )
            children.append(Child(name, f"http://{settings.host}:{port}", process, log_path))
        print("waiting for the services to be ready ...", flush=True)
        try:
            _wait_ready(children)
        except RuntimeError as exc:
            print(f"touchline up failed: {exc}", file=sys.stderr)
            for child in children:
                print(f"--- {child.log_path} ---\n{_log_tail(child.log_path)}", file=sys.stderr)
            return 1
        print(_banner(settings, children), flush=True)
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(
                        f"{child.name} exited unexpectedly (code {child.process.returncode}); "
                        f"stopping the stack. Last log lines:\n{_log_tail(child.log_path)}",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    except Stopped:
        print("\nstopping ...", flush=True)
        return code
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(children, broker)
        print("stopped.", flush=True)
