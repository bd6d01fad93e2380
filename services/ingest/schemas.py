"""Request and response shapes of the ingest API, for validation of responses and the OpenAPI docs.

Requests are parsed by hand (bodies are size-capped before parsing and may be text/plain), so the
request models here document the Segment wire format rather than parse it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from shared.events import EventType


class SegmentCall(BaseModel):
    """One Segment call (track, identify, page, screen, group or alias)."""

    model_config = ConfigDict(extra="allow")

    type: EventType | None = Field(
        default=None, description="Required inside a batch; implied by the route otherwise."
    )
    userId: str | None = None
    anonymousId: str | None = None
    messageId: str | None = Field(default=None, max_length=99)
    event: str | None = Field(default=None, description="Required for track.")
    name: str | None = Field(default=None, description="Page or screen name.")
    previousId: str | None = Field(default=None, description="Required for alias.")
    groupId: str | None = None
    timestamp: str | None = Field(default=None, description="ISO 8601 event time.")
    sentAt: str | None = Field(default=None, description="ISO 8601 send time (skew correction).")
    originalTimestamp: str | None = Field(
        default=None, description="RudderStack's event time, used when timestamp is absent."
    )
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = Field(default=None, description="Alternative to HTTP Basic auth.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[SegmentCall] = Field(max_length=2500)
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    writeKey: str | None = None


class RejectedItem(BaseModel):
    index: int
    messageId: str | None
    reason: str


class IngestResult(BaseModel):
    success: bool = True
    accepted: int
    rejected: list[RejectedItem] = []


class ErrorBody(BaseModel):
    success: Literal[False] = False
    code: str = Field(description="Stable machine name of the error, such as invalid_json.")
    message: str = Field(description="What went wrong, in a sentence.")
    detail: str = Field(description="The message again (older clients read it).")


# How the tracking routes authenticate. OpenAPI has no scheme for a key in the body, so each route
# also lists `{}` (no scheme): then the key is the body's `writeKey` (what browser SDKs send).
SECURITY_SCHEMES: dict[str, Any] = {
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "The source's write key as the user name, empty password; or, instead, "
        '`"writeKey": "<key>"` in the JSON body.',
    },
    "writeKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "writeKey",
        "description": "The write key in the query string (RudderStack's beacon route only).",
    },
}


def request_body(model: type[BaseModel], *, key_in_query: bool = False) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the JSON (or text/plain, gzip or deflate) request body
    and how the route authenticates."""
    schema = model.model_json_schema()
    content = {"schema": _inline_refs(schema, schema.pop("$defs", {}))}
    security: list[dict[str, list[str]]] = [{"writeKeyQuery": []}] if key_in_query else []
    return {
        "requestBody": {
            "required": True,
            "description": "May be sent with `Content-Encoding: gzip` or `deflate`; the size "
            "limits apply to the decompressed bytes.",
            "content": {"application/json": content, "text/plain": content},
        },
        "security": [*security, {"writeKey": []}, {}],
    }


def document_security(app: FastAPI) -> None:
    """Declare the write key schemes in `app`'s OpenAPI components (Swagger's Authorize)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed JSON, invalid event or too many events",
        401: "Missing or unknown write key",
        403: "The only event of the request is for an erased customer (suppressed)",
        404: "Unknown write key or path",
        413: "Request or event over its size limit (decompressed)",
        415: "Content-Encoding other than gzip or deflate",
        429: "Rate limit of the write key exceeded; retry after Retry-After (and "
        "X-RateLimit-Reset) seconds",
        503: "Broker unavailable, or the list of erased customers not loaded yet; nothing was "
        "accepted, retry after Retry-After",
    }.items()
}
