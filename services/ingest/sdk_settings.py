"""The settings Segment's SDKs fetch from their CDN before they send anything
(`GET <cdn>/v1/projects/<writeKey>/settings`), pointing their `Segment.io` integration at us."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers

ENABLED = {"__default": {"enabled": True, "integrations": {}}}


def _first(value: str | None) -> str:
    """The first of a proxy's comma-separated values (the one the client used)."""
    return (value or "").split(",")[0].strip()


def reached_at(headers: Headers, scheme: str) -> tuple[str, str]:
    """(host[:port], protocol) the client used to reach ingest, through a proxy if any."""
    host = _first(headers.get("x-forwarded-host")) or _first(headers.get("host"))
    protocol = _first(headers.get("x-forwarded-proto")) or scheme
    return host, "https" if protocol == "https" else "http"


def cdn_settings(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """What analytics-next and the mobile SDKs read to start: events go to `host`/v1, every call
    type enabled, no device-mode destinations, middleware, remote plugins or metrics."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": False,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": ENABLED, "identify": ENABLED, "group": ENABLED},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
