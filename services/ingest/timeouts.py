"""The body-read deadline of an ingest request: a client that trickles its body gets 408."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from services.ingest.errors import IngestError


async def read_within(timeout_s: float, reading: Awaitable[bytes]) -> bytes:
    """The body `reading` returns, or 408 (and the connection closed) after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await reading
    except TimeoutError:
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise IngestError(408, "body_timeout", message, {"Connection": "close"}) from None
