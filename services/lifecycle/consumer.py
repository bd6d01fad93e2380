"""The lifecycle consumer, outbox relay and erasure worker, with or without the HTTP API;
without it: `touchline consume lifecycle` or `python -m services.lifecycle.consumer`."""

import sys

from services.lifecycle.erasure import erase_from_topic
from services.lifecycle.handlers import build_engine
from services.lifecycle.outbox import relay
from shared.consumer_loop import Handler
from shared.privacy import erasure_worker
from shared.runtime import Worker
from shared.service import ConsumerSpec, run_consumer
from shared.settings import Settings

WORKERS: list[Worker] = [relay, erasure_worker(erase_from_topic)]


def handler(settings: Settings) -> Handler:
    return build_engine(settings).apply


CONSUMER = ConsumerSpec("lifecycle", handler=handler, workers=WORKERS)

if __name__ == "__main__":
    sys.exit(run_consumer(CONSUMER))
