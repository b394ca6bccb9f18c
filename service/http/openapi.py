"""The OpenAPI description: summaries, request examples and every error response of the /v1
routes (re-created from LitServe's with their documentation), and /docs and /redoc served from
an installed package instead of a CDN."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from service.batching.watchdog import WORKER_LOST, ServiceState
from service.http.operations import health
from service.schemas import ErrorResponse

_EXAMPLE_422 = {
    "detail": [
        {"loc": ["body", "texts"], "msg": "texts[0] is empty or whitespace only; send some text", "type": "value_error"}
    ]
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "missing or wrong API key (when the server requires one)",
        "example": {"detail": "missing or wrong API key: send it in the X-API-Key header"},
    },
    413: {
        "description": "request body larger than the limit",
        "example": {"detail": "request body is 3000015 bytes; the limit is 2000000"},
    },
    415: {
        "description": "Content-Type is not application/json",
        "example": {"detail": "Content-Type must be application/json (got 'text/plain')"},
    },
    422: {
        "description": "invalid request (malformed JSON, invalid UTF-8, wrong types, empty or oversize input, "
        "unsupported language pair): the message says what to fix",
        "example": _EXAMPLE_422,
    },
    429: {
        "description": "queue full: retry after Retry-After seconds",
        "example": {"detail": "server busy: 512 requests already queued; retry shortly"},
        "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    },
    503: {
        "description": "an inference worker died (the server answers what it holds with 503 and exits with code 3 "
        "to be restarted), or the server is shutting down and its grace period ended before this "
        "request was answered; retry after Retry-After seconds",
        "example": {"detail": WORKER_LOST},
        "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    },
    504: {
        "description": "request not answered in time (it waited too long in the queue)",
        "example": {
            "detail": "request waited more than 30 s for a model worker; the server is overloaded: retry later"
        },
    },
}
ROUTES = {
    "/v1/sentiment": (
        "Classify reviews as positive or negative",
        "One result per text, in request order: the label, its probability and both class probabilities. "
        "Requests from different clients are batched together dynamically.",
        {"two reviews": {"value": {"texts": ["A wonderful, moving film.", "Two hours I will never get back."]}}},
    ),
    "/v1/translate": (
        "Translate sentences (beam search)",
        "One result per text, in request order. `n_best` > 1 adds the other hypotheses as `alternatives`; "
        "`return_alignments` adds the attention weights of the chosen hypothesis. Unsupported language "
        "pairs are rejected with 422 listing the supported ones.",
        {
            "English to German": {
                "value": {
                    "texts": ["A man is riding a bicycle down the street."],
                    "source_lang": "en",
                    "target_lang": "de",
                }
            },
            "3-best with alignments": {
                "value": {
                    "texts": ["Two dogs play in the snow."],
                    "target_lang": "de",
                    "beam_size": 5,
                    "n_best": 3,
                    "return_alignments": True,
                }
            },
        },
    ),
}


def _error_responses() -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": ErrorResponse,
            "description": r["description"],
            "content": {"application/json": {"example": r["example"]}},
            **({"headers": r["headers"]} if "headers" in r else {}),
        }
        for code, r in ERROR_RESPONSES.items()
    }


def describe_routes(app: FastAPI, state: ServiceState) -> None:
    """Re-create LitServe's routes with their documentation: summaries, request examples, every
    error response with its schema and an example. The /v1 routes lose LitServe's no-op auth
    dependency (the gateway authenticates)."""
    routes = app.router.routes
    for i, route in enumerate(routes):
        if not isinstance(route, APIRoute):
            continue
        if route.path in ROUTES:
            summary, description, examples = ROUTES[route.path]
            routes[i] = APIRoute(
                route.path,
                route.endpoint,
                methods=["POST"],
                response_model=route.response_model,
                response_model_exclude_none=True,
                summary=summary,
                description=description,
                tags=["inference"],
                operation_id=route.path.rsplit("/", 1)[-1],
                responses=_error_responses(),
                openapi_extra={"requestBody": {"content": {"application/json": {"examples": examples}}}},
            )
        elif route.path == "/health":
            routes[i] = APIRoute(
                route.path,
                health(route.endpoint, state),
                methods=["GET"],
                dependencies=route.dependencies,
                response_class=PlainTextResponse,
                tags=["operations"],
                summary="Ready: 200 once every model is loaded, verified and warmed up",
                responses={
                    200: {"description": "ready", "content": {"text/plain": {"example": "ok"}}},
                    503: {
                        "description": "still starting, or an inference worker died",
                        "content": {"text/plain": {"example": "not ready"}},
                    },
                },
            )
        elif route.path in ("/", "/litserve/info"):
            route.include_in_schema = False


def serve_docs_offline(app: FastAPI) -> None:
    """/docs and /redoc with Swagger UI's and ReDoc's files from the fastapi-offline package, not
    from a CDN: they load where the service runs, air-gapped or not. LitServe made the app, so its
    CDN-backed pages are swapped for those of a FastAPIOffline app made with the same settings
    (the pages, the OAuth2 redirect page and the mount that serves the files)."""
    docs = FastAPIOffline(
        title=app.title,
        openapi_url=app.openapi_url,
        docs_url=app.docs_url,
        redoc_url=app.redoc_url,
        swagger_ui_oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in pages]
    app.router.routes.extend(r for r in docs.router.routes if getattr(r, "path", None) not in (app.openapi_url,))
