"""The terminal reports of `touchline report`."""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx

from shared.settings import DEV_READ_TOKEN


def add_service_arguments(parser: argparse.ArgumentParser, service: str, default_url: str) -> None:
    """`--url` (default TOUCHLINE_<SERVICE>_URL) and `--token` (default TOUCHLINE_READ_TOKEN)."""
    parser.add_argument(
        "--url", default=os.environ.get(f"TOUCHLINE_{service.upper()}_URL", default_url)
    )
    parser.add_argument("--token", default=os.environ.get("TOUCHLINE_READ_TOKEN", DEV_READ_TOKEN))


def fetch(
    service: str, url: str, path: str, token: str, params: dict[str, Any], timeout_s: float
) -> Any | None:
    """GET a report; None, with the reason printed, when the service is unreachable or refuses."""
    try:
        answer = httpx.get(
            f"{url}{path}",
            params={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        print(f"cannot reach the {service} service at {url}: {exc}")
        return None
    if answer.status_code != 200:
        print(f"{service} service answered {answer.status_code}: {answer.text}")
        return None
    return answer.json()
