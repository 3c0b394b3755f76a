"""The API key: which key the app asks for, and the check that runs before anything else.

With a key, every HTTP request must carry it in the ``X-API-Key`` header: the six
endpoints, ``/openapi.json``, ``/docs`` and ``/redoc`` alike. The check is ASGI
middleware, so it runs before routing and before the body is read: a request without
the key gets ``401`` whatever its body holds (malformed JSON included). Keys are
compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bayestwin.api.problems import unauthorized
from bayestwin.errors import InvalidInputError
from bayestwin.settings import Settings

__all__ = ["API_KEY_HEADER", "ApiKeyMiddleware", "key_matches", "resolve_api_key"]

API_KEY_HEADER = "X-API-Key"


def resolve_api_key(api_key: str | None, settings: Settings) -> str | None:
    """Return the key the app asks for: ``api_key``, else the ``api_key`` setting.

    Parameters
    ----------
    api_key : str or None
        The key given to :func:`~bayestwin.api.create_app`.
    settings : Settings
        Its ``api_key`` is used when ``api_key`` is None.

    Returns
    -------
    str or None
        The key; None when neither is set (the API is open).

    Raises
    ------
    InvalidInputError
        With field ``api_key``, if the key is empty or only white space (e.g.
        ``BAYESTWIN_API_KEY=""``): an empty key never opens the API.
    """
    key = api_key
    if key is None and settings.api_key is not None:
        key = settings.api_key.get_secret_value()
    if key is not None and not key.strip():
        raise InvalidInputError(
            "api_key is empty: set a non-empty key (the api_key setting or "
            "BAYESTWIN_API_KEY), or unset it to serve the API without a key",
            field="api_key",
        )
    return key


def key_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` is ``expected``, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class ApiKeyMiddleware:
    """Answer ``401`` to every HTTP request that lacks the key, before anything else.

    Parameters
    ----------
    app : ASGI app
        The app behind the check.
    api_key : str
        The key asked for in :data:`API_KEY_HEADER`.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request with the key on; answer any other HTTP request ``401``."""
        if scope["type"] not in ("http", "websocket") or key_matches(
            Headers(scope=scope).get(API_KEY_HEADER), self.api_key
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = unauthorized(Request(scope), f"missing or wrong {API_KEY_HEADER} header")
        await response(scope, receive, send)
