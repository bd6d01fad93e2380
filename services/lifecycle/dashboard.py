"""The ops dashboard (`GET /dashboard`): a static page and its script, served by the lifecycle
service with everything it needs (no CDN), plus the two reads it makes besides the conversion
API: live event counts of this instance, and the scoring service's segments, value by channel,
value model and its validation (proxied with the caller's token, so the page talks to one
origin)."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources import files
from typing import Literal

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from shared.api import ReadAccess, error_responses
from shared.events import CHANNELS
from shared.runtime import ConsumerService
from shared.settings import Settings

PAGE_FILES = {"": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}  # fmt: skip
# The page may load only its own script and style and call only its own origin.
POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
SCORING_TIMEOUT_S = 5.0
VALIDATION_TIMEOUT_S = 60.0  # a fit on the calibration period

pages = APIRouter(tags=["dashboard"], include_in_schema=False)
reads = APIRouter(
    prefix="/v1",
    dependencies=[ReadAccess],
    tags=["dashboard"],
    responses=error_responses(400, 401, 404, 502),
)


def _serve(path: str, name: str, media_type: str) -> None:
    def page() -> Response:
        body = files("services.lifecycle").joinpath("dashboard", name).read_bytes()
        headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}
        return Response(body, media_type=media_type, headers=headers)

    pages.add_api_route(f"/dashboard{path}", page, methods=["GET"])


for _path, (_name, _type) in PAGE_FILES.items():
    _serve(_path, _name, _type)


@reads.get("/live")
def live(request: Request) -> dict[str, object]:
    """Events applied per channel (every channel, in their order) by this instance's consumer
    since it started (the page turns two readings into a rate), and its backlog: events not
    applied yet, age of the oldest."""
    service: ConsumerService = request.app.state.service
    counted = service.loop.stats.by_channel if service.loop else {}
    applied = {channel: counted.get(channel, 0) for channel in CHANNELS}  # all, in their order
    return {
        "at": datetime.now(UTC).isoformat(),
        "applied": applied,
        "behind": service.progress.behind(),
        "oldest_unapplied_s": round(service.progress.unapplied_age_s(), 1),
    }


@reads.get("/scoring/{path:path}")
async def scoring(
    path: Literal["segments", "value/channels", "model", "model/validation"], request: Request
) -> Response:
    """The scoring service's segments, value by channel, value model and its validation, asked
    with the caller's token."""
    settings: Settings = request.app.state.settings
    url = f"{settings.scoring_url}/v1/{path}"
    timeout = VALIDATION_TIMEOUT_S if path == "model/validation" else SCORING_TIMEOUT_S
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            answer = await client.get(
                url,
                params=request.query_params,
                headers={"Authorization": request.headers.get("Authorization", "")},
            )
    except httpx.HTTPError as exc:
        raise HTTPException(
            502, detail=f"scoring service unreachable: {type(exc).__name__}"
        ) from None
    return Response(answer.content, answer.status_code, media_type="application/json")
