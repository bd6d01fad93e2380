"""The embedded stack's supervisor: restarts a child that dies (with backoff, saying so), and stops
the stack cleanly: ingest refuses new events, the consumers apply every accepted one and the
outbox is relayed, then the consumers stop, then the broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.events import TOUCHPOINTS, all_topics
from shared.kafka import BrokerUnavailable, consumer_groups, consumer_lags, ensure_topics
from shared.privacy import republish_suppressions
from shared.settings import Settings
from touchline.broker import EmbeddedBroker, die_with_parent
from touchline.services import CONSUMERS, SERVICES

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STEADY_S = 60.0  # a child that ran this long starts its backoff afresh
# The services notice the outage (readiness, lost offsets) before an empty broker replaces it.
BROKER_RESTART_DELAY_S = 5.0
STOP_TIMEOUT_S = 20.0
PROGRESS_EVERY_S = 2.0
OUTBOX_GAUGE = "touchline_outbox_pending"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Child:
    """A service process, restarted by the supervisor when it dies."""

    name: str
    url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each after less than STEADY_S
    restart_at: float | None = None


@dataclass
class DrainResult:
    left: dict[str, int] = field(default_factory=dict)  # consumer group -> events not applied
    outbox: int | None = 0  # outbox rows not yet published (None: a consumer service did not say)

    @property
    def clean(self) -> bool:
        return not any(self.left.values()) and self.outbox == 0


class Supervisor:
    def __init__(self, settings: Settings, logs: Path, pid_file: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.pid_file = pid_file
        self.broker = EmbeddedBroker(settings.broker_port, logs / "broker.log")
        self.broker_restart_at: float | None = None
        self.children = {
            name: Child(
                name,
                f"http://{settings.host}:{getattr(settings, f'{name}_port')}",
                logs / f"{name}.log",
            )
            for name in SERVICES
        }
        self._env = {**os.environ, "TOUCHLINE_EMBEDDED": "true"}
        self._executable = str(Path(sys.executable).parent / "touchline")

    # -- starting -------------------------------------------------------------------------------

    def start_broker(self) -> None:
        settings = self.settings
        self.broker.start()
        ensure_topics(settings.kafka_bootstrap, all_topics(), settings.topic_partitions)
        # The broker forgot every erasure: give it back the suppression list before ingest reads it.
        republish_suppressions(settings.database_url, settings.kafka_bootstrap)
        self.write_pids()

    def start_service(self, child: Child) -> None:
        with child.log_path.open("ab") as log:
            child.process = subprocess.Popen(
                [self._executable, "serve", child.name],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                preexec_fn=die_with_parent,
            )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.write_pids()

    def write_pids(self) -> None:
        """`<data dir>/touchline.pids`: which process is which, for operators and tests."""
        pids = {"up": os.getpid()}
        if self.broker.process is not None:
            pids["broker"] = self.broker.process.pid
        for child in self.children.values():
            if child.process is not None and child.process.poll() is None:
                pids[child.name] = child.process.pid
        # Replaced whole, never rewritten in place: a reader never sees it empty.
        partial = self.pid_file.with_suffix(".pids.tmp")
        partial.write_text(json.dumps(pids) + "\n")
        partial.replace(self.pid_file)

    # -- supervising ----------------------------------------------------------------------------

    def supervise(self) -> None:
        """One round: notice dead children, restart those whose backoff has passed."""
        now = time.monotonic()
        broker = self.broker.process
        if broker is not None and broker.poll() is not None and self.broker_restart_at is None:
            say(
                f"\nTHE EMBEDDED BROKER DIED (code {broker.returncode}). Its log was in memory: "
                "events accepted but not yet applied are LOST (each consumer reports it in /readyz "
                f"and on /metrics). Restarting an empty broker in {BROKER_RESTART_DELAY_S:.0f} s; "
                f"the services reconnect by themselves. Broker log: {self.logs / 'broker.log'}"
            )
            self.broker_restart_at = now + BROKER_RESTART_DELAY_S
        if self.broker_restart_at is not None and now >= self.broker_restart_at:
            self.broker.stop()
            try:
                self.start_broker()
                self.broker_restart_at = None
                say("the embedded broker is back (empty); topics and suppressions recreated")
            except Exception as exc:  # keep supervising: the port may still be held
                say(f"the embedded broker did not restart ({exc}); retrying")
                self.broker.stop()
                self.broker_restart_at = now + MAX_BACKOFF_S / 6
        for child in self.children.values():
            process = child.process
            if process is not None and process.poll() is not None and child.restart_at is None:
                ran = now - child.started_at
                child.failures = 1 if ran >= STEADY_S else child.failures + 1
                delay = min(FIRST_BACKOFF_S * 2 ** (child.failures - 1), MAX_BACKOFF_S)
                say(
                    f"\n{child.name} exited (code {process.returncode}) after {ran:.0f} s; "
                    f"restarting it in {delay:.0f} s (restart {child.failures} in a row); the "
                    f"broker and the other services keep running. Last lines of {child.log_path}:"
                    f"\n{log_tail(child.log_path, 10)}"
                )
                child.restart_at = now + delay
            if child.restart_at is not None and now >= child.restart_at:
                self.start_service(child)
                say(f"{child.name} restarted (pid {child.process and child.process.pid})")

    # -- stopping -------------------------------------------------------------------------------

    def refuse_new_events(self) -> None:
        ingest = self.children["ingest"].process
        if ingest is not None and ingest.poll() is None:
            os.killpg(ingest.pid, signal.SIGUSR1)  # the group: every ingest worker process

    def left_to_apply(self) -> DrainResult:
        """What the consumers have not applied yet and the outbox has not published."""
        groups: dict[str, list[str]] = {name: [TOUCHPOINTS] for name in CONSUMERS}
        for group in consumer_groups(self.settings.kafka_bootstrap):
            if any(group.startswith(f"{name}-") for name in CONSUMERS):
                groups[group] = []  # the services' other groups (erasures): what they committed on
        lags = consumer_lags(self.settings.kafka_bootstrap, groups)
        left = {group: sum(per_partition.values()) for group, per_partition in lags.items()}
        return DrainResult(left, self._outbox_pending())

    def _outbox_pending(self) -> int | None:
        """Rows in every consumer service's outbox (None while one of them does not say)."""
        total = 0
        for name in CONSUMERS:
            try:
                text = httpx.get(f"{self.children[name].url}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            prefix = f'{OUTBOX_GAUGE}{{service="{name}"}} '
            rows = [line for line in text.splitlines() if line.startswith(prefix)]
            if not rows:
                return None
            total += int(float(rows[0].removeprefix(prefix)))
        return total

    def drain(self, deadline_s: float, hurry: Callable[[], bool]) -> DrainResult:
        """Wait until every accepted event is applied and the outbox relayed (twice in a row, half
        a second apart: the outbox gauge lags a relay round), or the deadline, or `hurry()`."""
        deadline = time.monotonic() + deadline_s
        next_report = time.monotonic()
        result = DrainResult(outbox=None)
        clean_rounds = 0
        while True:
            self.supervise()  # a consumer that dies while draining is restarted
            if self.broker_restart_at is not None:
                say("the broker is gone: nothing more can be applied")
                return result
            try:
                result = self.left_to_apply()
                clean_rounds = clean_rounds + 1 if result.clean else 0
            except BrokerUnavailable:
                clean_rounds = 0
            if clean_rounds >= 2:
                return result
            now = time.monotonic()
            if now >= deadline or hurry():
                return result
            if now >= next_report and not result.clean:
                say(f"draining: {describe(result)} (gives up in {deadline - now:.0f} s)")
                next_report = now + PROGRESS_EVERY_S
            time.sleep(0.5)

    def stop(self, names: tuple[str, ...]) -> None:
        children = [self.children[n] for n in names if self.children[n].process is not None]
        for child in children:
            child.restart_at = None
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            assert child.process is not None
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in time; killing it")
                child.process.kill()
                child.process.wait()
            child.process = None

    def stop_broker(self) -> None:
        self.broker.stop()
        self.pid_file.unlink(missing_ok=True)


def describe(result: DrainResult) -> str:
    parts = [
        f"{group} {n:,} event{'' if n == 1 else 's'} left"
        for group, n in sorted(result.left.items())
        if n
    ]
    if result.outbox is None:
        parts.append("outbox unknown (a consumer service not answering)")
    elif result.outbox:
        parts.append(f"outboxes: {result.outbox:,} rows not yet published")
    return ", ".join(parts) or "nothing left"
