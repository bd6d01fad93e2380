"""HTTP pieces every service shares: token checks, health routes, JSON errors."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.settings import Settings

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    """Dates and times as ISO 8601 only: pydantic would read "0" or 1.7e9 as a Unix time."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO 8601 date or time, such as 2026-01-31T12:00:00Z")
    return value


FIRST_YEAR, LAST_YEAR = 1900, 2200  # dates and times a route takes (and does arithmetic with)
_OUT_OF_RANGE = f"must lie in the years {FIRST_YEAR}-{LAST_YEAR}"


def _utc_in_range(value: datetime) -> datetime:
    """An aware UTC time (a naive one is taken as UTC) within the years a route takes."""
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 lies before the first UTC time there is
        raise ValueError(_OUT_OF_RANGE) from None
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(_OUT_OF_RANGE)
    return value


def _date_in_range(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(_OUT_OF_RANGE)
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_utc_in_range)]
IsoDate = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(_date_in_range)]

_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token_in(token: str, allowed: list[str]) -> bool:
    # Compare against every token so timing does not reveal which one (or how much) matched.
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def require_read_token(request: Request, credentials: Credentials) -> None:
    """Read APIs: any read token, or the admin token."""
    settings: Settings = request.app.state.settings
    if credentials is None:
        raise _unauthorized("missing bearer token")
    allowed = [*settings.read_token_list, settings.admin_token]
    if not _token_in(credentials.credentials, allowed):
        raise _unauthorized("invalid bearer token")


def require_admin_token(request: Request, credentials: Credentials) -> None:
    """Admin routes: the admin token; a read token is known but not enough (403)."""
    settings: Settings = request.app.state.settings
    if credentials is None:
        raise _unauthorized("missing bearer token")
    if _token_in(credentials.credentials, [settings.admin_token]):
        return
    if _token_in(credentials.credentials, settings.read_token_list):
        raise HTTPException(403, detail="admin token required")
    raise _unauthorized("invalid bearer token")


ReadAccess = Depends(require_read_token)
AdminAccess = Depends(require_admin_token)


class Problem(BaseModel):
    detail: str


_ERRORS = {
    400: "Bad parameters: one readable sentence per problem",
    401: "Missing or invalid bearer token",
    403: "The admin token is required",
    404: "Unknown customer, or nothing of the kind yet",
    502: "A service this one asks is unavailable",
    503: "The broker or the database is unavailable; retry after Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a router (what `responses=` takes)."""
    return {code: {"model": Problem, "description": _ERRORS[code]} for code in codes}


READ_ERRORS = error_responses(400, 401, 404, 503)
ADMIN_ERRORS = error_responses(400, 401, 403, 404, 503)


def health_router(
    readiness: Callable[[Request], Mapping[str, bool | str]],
    notices: Callable[[Request], list[str]] | None = None,
) -> APIRouter:
    """`/healthz` (process is up) and `/readyz`: 200 while every check passes, else 503 with the
    reason of each failing check (a check answers True, or False or a sentence saying why not);
    `notices` are events worth knowing that do not make the service unready."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        results = readiness(request)
        checks = {name: result is True for name, result in results.items()}
        reasons = {
            name: result if isinstance(result, str) else f"{name} check failed"
            for name, result in results.items()
            if result is not True
        }
        ready = all(checks.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "reasons": reasons,
        }
        if notices is not None:
            body["notices"] = notices(request)
        return JSONResponse(body, status_code=200 if ready else 503)

    return router


def answer_database_outages_with_503(app: FastAPI) -> None:
    """The database down, or busy past its timeout: 503 with Retry-After, not a bare 500."""

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable, answered 503: %s", type(exc).__name__)
        return JSONResponse(
            {"detail": "the database is unavailable or busy; retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(OperationalError, unavailable)
    app.add_exception_handler(InterfaceError, unavailable)


def answer_bad_parameters_with_400(app: FastAPI) -> None:
    """Bad query or body parameters: 400 with one readable sentence per problem."""

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'] if p != 'body')}: {error['msg']}"
            for error in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)
