"""The `touchline` command: `up` (embedded stack), `serve`, `consume`, `migrate`, `topics`,
`report` (conversion table from a running stack) and `demo` (a year of demo traffic)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from touchline.services import CONSUMERS, SERVICES, declaration


def serve(name: str) -> int:
    import uvicorn

    from shared.logs import configure_logging
    from shared.settings import Settings

    spec = declaration(name)
    settings = Settings()
    configure_logging(name)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": spec.port(settings),
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if spec.http_protocol:  # SDKs and browsers: time out slow clients, bound connections
        options["http"] = spec.http_protocol
    if spec.worker_app and spec.processes(settings) > 1:
        # Stateless: each worker process builds the app (and its logging) from the environment.
        # Their metrics go to files in one directory, which /metrics of any worker sums up.
        metrics_dir = tempfile.mkdtemp(prefix=f"touchline-{name}-metrics-")
        # `touchline up` asks every ingest process to drain (SIGUSR1): each worker handles it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run(spec.worker_app, factory=True, workers=spec.processes(settings), **options)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return 0
    uvicorn.run(spec.create_app(settings), **options)
    return 0


def consume(name: str) -> int:
    from shared.service import run_consumer

    consumer = declaration(name).consumer
    if consumer is None:
        raise SystemExit(f"touchline consume: {name} has no consumer")
    return run_consumer(consumer)


def migrate() -> int:
    from shared.migrate import upgrade
    from shared.settings import Settings

    upgrade(Settings().database_url)
    return 0


def topics() -> int:
    from shared.events import all_topics
    from shared.kafka import ensure_topics
    from shared.settings import Settings

    settings = Settings()
    ensure_topics(
        settings.kafka_bootstrap,
        all_topics(),
        settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        min_insync_replicas=settings.topic_min_insync_replicas,
    )
    return 0


def stack_urls() -> dict[str, str]:
    """The services' URLs on this machine, from the TOUCHLINE_*_PORT settings `touchline up` reads
    (a TOUCHLINE_*_URL given wins); set as defaults for `demo` and `report`."""
    host = os.environ.get("TOUCHLINE_HOST", "127.0.0.1")
    defaults = {"ingest": 8000, "lifecycle": 8001, "scoring": 8002}
    urls = {}
    for name, port in defaults.items():
        port_var = f"TOUCHLINE_{name.upper()}_PORT"
        url = f"http://{host}:{os.environ.get(port_var, port)}"
        urls[name] = os.environ.setdefault(f"TOUCHLINE_{name.upper()}_URL", url)
    return urls


def stack_running(command: str, needs: tuple[str, ...]) -> bool:
    """True when the services `needs` answer; else says so in one line."""
    import httpx

    urls = stack_urls()
    for name in needs:
        try:
            httpx.get(f"{urls[name]}/healthz", timeout=5).raise_for_status()
        except httpx.HTTPError:
            print(
                f"touchline {command}: no {name} service answers at {urls[name]}. Start the stack "
                f"with `make up` (in another terminal), or point TOUCHLINE_{name.upper()}_PORT "
                f"(or TOUCHLINE_{name.upper()}_URL) at a running one.",
                file=sys.stderr,
            )
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="touchline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the embedded dev stack until Ctrl-C")
    serve_cmd = commands.add_parser("serve", help="run one service's HTTP API (and its consumer)")
    serve_cmd.add_argument("service", choices=SERVICES)
    consume_cmd = commands.add_parser("consume", help="run one consumer without its HTTP API")
    consume_cmd.add_argument("service", choices=CONSUMERS)
    commands.add_parser("migrate", help="apply the database migrations (alembic upgrade head)")
    commands.add_parser("topics", help="create the Kafka topics")
    # These two parse their own options (`touchline demo -h`, `touchline report conversion -h`).
    commands.add_parser("report", help="`report conversion` or `report value-validation`")
    commands.add_parser("demo", help="send a year of demo traffic to a running stack")
    argv = sys.argv[1:] if argv is None else argv
    # Help, or URLs given as options: nothing to check here (those commands say what failed).
    asks_help = "-h" in argv or "--help" in argv or any("-url" in a for a in argv)
    if argv[:2] == ["report", "conversion"]:
        from touchline.reports.conversion import main as report

        if not asks_help and not stack_running("report", ("lifecycle",)):
            return 1
        return report(argv[2:])
    if argv[:2] == ["report", "value-validation"]:
        from touchline.reports.value_validation import main as value_validation

        return value_validation(argv[2:])
    if argv[:1] == ["demo"]:
        from touchline.demo import main as demo

        if not asks_help and not stack_running("demo", ("ingest", "lifecycle", "scoring")):
            return 1
        return demo(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "up":
        from touchline.stack import up

        return up()
    if args.command == "serve":
        return serve(args.service)
    if args.command == "consume":
        return consume(args.service)
    if args.command == "migrate":
        return migrate()
    if args.command in ("report", "demo"):
        parser.error("usage: touchline report conversion [options] | touchline demo [options]")
    return topics()


if __name__ == "__main__":
    sys.exit(main())
