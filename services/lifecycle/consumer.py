"""The lifecycle consumer without its HTTP API: `python -m services.lifecycle.consumer`."""

import sys

from services.lifecycle import handlers
from shared.logs import configure_logging
from shared.runtime import ConsumerService, run_until_signalled
from shared.settings import Settings


def main() -> int:
    configure_logging("lifecycle-consumer")
    return run_until_signalled(
        ConsumerService(Settings(), name="lifecycle", handler=handlers.apply)
    )


if __name__ == "__main__":
    sys.exit(main())
