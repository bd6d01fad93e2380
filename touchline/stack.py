"""`touchline up`: the embedded dev stack (broker, migrations, the three services), one command,
supervised until Ctrl-C, which stops it without losing an accepted event."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from shared.kafka import BrokerUnavailable
from shared.migrate import upgrade
from shared.settings import Settings
from touchline.broker import MissingEmbeddedBroker, broker_binary, port_in_use
from touchline.supervisor import CONSUMERS, Child, DrainResult, Supervisor, describe, log_tail, say

READY_TIMEOUT_S = 90.0


class Stopped(Exception):
    pass


def _ports(settings: Settings) -> dict[str, int]:
    return {
        "TOUCHLINE_BROKER_PORT": settings.broker_port,
        "TOUCHLINE_INGEST_PORT": settings.ingest_port,
        "TOUCHLINE_LIFECYCLE_PORT": settings.lifecycle_port,
        "TOUCHLINE_SCORING_PORT": settings.scoring_port,
    }


def lock_data_dir(data_dir: Path) -> IO[str] | None:
    """Hold `<data dir>/touchline.lock` while the stack runs (None: another stack holds it). The
    kernel releases it when this process ends, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "touchline.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _wait_ready(children: list[Child], stopping: list[int]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(children)
    with httpx.Client(timeout=2) as client:
        while pending:
            if stopping:
                raise Stopped
            for child in list(pending):
                assert child.process is not None
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


def _banner(settings: Settings, supervisor: Supervisor) -> str:
    urls = {c.name: c.url for c in supervisor.children.values()}
    ingest, lifecycle, scoring = urls["ingest"], urls["lifecycle"], urls["scoring"]
    write_key = next(iter(settings.write_key_sources))
    read_token = settings.read_token_list[0]
    drain_s = settings.stop_drain_timeout_s
    return f"""
Touchline is up: broker 127.0.0.1:{settings.broker_port}, SQLite in {settings.data_dir}/

  ingest     {ingest}     API docs {ingest}/docs
  lifecycle  {lifecycle}     API docs {lifecycle}/docs
  scoring    {scoring}     API docs {scoring}/docs

  write key    {write_key}   (HTTP Basic username, empty password)
  read token   {read_token}  (Authorization: Bearer ...)
  admin token  {settings.admin_token}  (erasure, model refit, stage reset: Bearer ...)
  logs         {settings.data_dir}/logs/   pids {settings.data_dir}/touchline.pids

Send a first event:
  curl -u {write_key}: -H 'Content-Type: application/json' \\
    -d '{{"userId": "first-customer", "event": "Signed Up", "properties": {{"plan": "free"}}}}' \\
    {ingest}/v1/track

Then read it back:
  curl -H 'Authorization: Bearer {read_token}' {lifecycle}/v1/customers/first-customer
  curl -H 'Authorization: Bearer {read_token}' {scoring}/v1/customers/first-customer/scores

A crashed service is restarted. Press Ctrl-C to stop everything: ingest stops accepting,
the consumers apply every accepted event (for up to {drain_s:g} s, TOUCHLINE_STOP_DRAIN_TIMEOUT_S),
then the rest stops.
"""


def _stop_cleanly(supervisor: Supervisor, settings: Settings, stopping: list[int]) -> int:
    """Ingest refuses, the consumers drain, ingest stops, a last drain, consumers, broker."""
    say("\nstopping: ingest now answers 503 (Retry-After) to new events; draining the consumers")
    supervisor.refuse_new_events()
    deadline = time.monotonic() + settings.stop_drain_timeout_s

    def hurry() -> bool:
        return len(stopping) > 1  # a second Ctrl-C: stop without waiting

    result = supervisor.drain(settings.stop_drain_timeout_s, hurry)
    supervisor.stop(("ingest",))  # its requests in flight are answered first: then none is left
    if result.clean and not hurry():
        result = supervisor.drain(max(deadline - time.monotonic(), 0.0), hurry)
    supervisor.stop(CONSUMERS)
    if not result.clean:  # the consumers' last batches are in: count what is left exactly
        with contextlib.suppress(BrokerUnavailable):
            result = DrainResult(supervisor.left_to_apply().left, result.outbox)
    supervisor.stop_broker()
    return _report(result, settings)


def _report(result: DrainResult, settings: Settings) -> int:
    if result.clean:
        say("stopped cleanly: every accepted event was applied and the outbox relayed.")
        return 0
    per_consumer = ", ".join(f"{group} {n:,}" for group, n in sorted(result.left.items()))
    say(
        f"STOPPED WITH EVENTS LEFT UNAPPLIED ({describe(result)}). Per consumer: "
        f"{per_consumer or 'unknown (the broker did not answer)'}. They were only in the embedded "
        "broker's memory and are lost. Give the drain more time with "
        f"TOUCHLINE_STOP_DRAIN_TIMEOUT_S (now {settings.stop_drain_timeout_s:g} s)."
    )
    return 1


def up() -> int:
    os.environ.setdefault("TOUCHLINE_EMBEDDED", "true")
    settings = Settings()
    try:
        broker_binary()
    except MissingEmbeddedBroker as exc:
        print(f"touchline up: {exc}", file=sys.stderr)
        return 1
    lock = lock_data_dir(settings.data_dir)
    if lock is None:
        holder = (settings.data_dir / "touchline.lock").read_text().strip() or "?"
        print(
            f"touchline up: another stack (pid {holder}) runs on the data directory "
            f"{settings.data_dir}/. Stop it, or give this one another TOUCHLINE_DATA_DIR and "
            "other ports (TOUCHLINE_BROKER_PORT, _INGEST_PORT, _LIFECYCLE_PORT, _SCORING_PORT).",
            file=sys.stderr,
        )
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

    stopping: list[int] = []  # one entry per Ctrl-C (or SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings, logs, settings.data_dir / "touchline.pids")
    started = False
    try:
        print(f"migrating {settings.database_url} ...", flush=True)
        upgrade(settings.database_url)
        print(f"starting the embedded broker on 127.0.0.1:{settings.broker_port} ...", flush=True)
        supervisor.start_broker()
        for child in supervisor.children.values():
            supervisor.start_service(child)
        print("waiting for the services to be ready ...", flush=True)
        try:
            _wait_ready(list(supervisor.children.values()), stopping)
        except RuntimeError as exc:
            print(f"touchline up failed: {exc}", file=sys.stderr)
            for child in supervisor.children.values():
                print(f"--- {child.log_path} ---\n{log_tail(child.log_path)}", file=sys.stderr)
            return 1
        print(_banner(settings, supervisor), flush=True)
        started = True
        while not stopping:
            supervisor.supervise()
            time.sleep(0.2)
        return _stop_cleanly(supervisor, settings, stopping)
    except Stopped:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not started:
            print("\nstopping ...", flush=True)
        supervisor.stop(tuple(supervisor.children))
        supervisor.stop_broker()
        print("stopped.", flush=True)
        lock.close()
