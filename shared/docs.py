"""API docs that work offline: `/docs` (Swagger UI) with its script and style served by the
service itself from the installed fastapi-offline package, never a CDN."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
# The page may load only from its own service (its one inline script starts Swagger UI).
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)


def serve_docs(app: FastAPI) -> None:
    """Replace FastAPI's `/docs` page (which loads from a CDN) with a local one; drop `/redoc`
    (ReDoc's page loads its logo from a CDN)."""
    pages = {app.docs_url, app.redoc_url}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in pages]
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), "docs")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    async def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=f"{root(request)}{app.openapi_url}",
            title=f"{app.title} - API docs",
            oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
            swagger_js_url=f"{root(request)}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root(request)}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root(request)}{ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = POLICY
        return page

    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
