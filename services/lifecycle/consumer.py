"""The lifecycle consumer, outbox relay and erasure worker without the HTTP API:
`python -m services.lifecycle.consumer`."""

import sys

from services.lifecycle.erasure import erase_from_topic
from services.lifecycle.handlers import build_engine
from services.lifecycle.outbox import relay
from shared.logs import configure_logging
from shared.privacy import erasure_worker
from shared.runtime import ConsumerService, run_until_signalled
from shared.settings import Settings

WORKERS = [relay, erasure_worker(erase_from_topic)]


def main() -> int:
    configure_logging("lifecycle-consumer")
    settings = Settings()
    engine = build_engine(settings)
    return run_until_signalled(
        ConsumerService(settings, name="lifecycle", handler=engine.apply, workers=WORKERS)
    )


if __name__ == "__main__":
    sys.exit(main())
