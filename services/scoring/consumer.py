"""The scoring consumer without its HTTP API: `python -m services.scoring.consumer`."""

import sys

from services.scoring import handlers
from services.scoring.workers import WORKERS
from shared.logs import configure_logging
from shared.runtime import ConsumerService, run_until_signalled
from shared.settings import Settings


def main() -> int:
    configure_logging("scoring-consumer")
    service = ConsumerService(Settings(), name="scoring", handler=handlers.apply, workers=WORKERS)
    return run_until_signalled(service)


if __name__ == "__main__":
    sys.exit(main())
