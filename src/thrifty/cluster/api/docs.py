"""`/docs`: Swagger UI over the API's OpenAPI document, from files this package ships.

FastAPI's own page loads Swagger UI from a CDN, which renders nothing on a cluster without
internet access; here the same page points at a vendored copy under `static/` (its version and
licence in `static/SOURCES.txt`), and Swagger UI's online validator is switched off.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
STATIC_URL = "/static/docs"
DOCS_URL = "/docs"
REDIRECT_URL = "/docs/oauth2-redirect"


def add_docs(app: FastAPI) -> None:
    """Serve the docs page and its assets on `app` (created with docs_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="docs-static")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{REDIRECT_URL}",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(REDIRECT_URL, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
