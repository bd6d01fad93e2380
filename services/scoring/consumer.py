"""The scoring consumer and its workers, with or without the HTTP API; without it:
`touchline consume scoring` or `python -m services.scoring.consumer`."""

import sys

from services.scoring import handlers
from services.scoring.workers import WORKERS
from shared.consumer_loop import Handler
from shared.service import ConsumerSpec, run_consumer
from shared.settings import Settings


def handler(settings: Settings) -> Handler:
    return handlers.apply


CONSUMER = ConsumerSpec("scoring", handler=handler, workers=WORKERS)

if __name__ == "__main__":
    sys.exit(run_consumer(CONSUMER))
