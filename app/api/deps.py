"""Dependencies as short Annotated aliases, so a route's signature reads as its needs.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
request for what is an attribute lookup.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.service import Service


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# Declares the scheme in the OpenAPI schema; check_token does the checking (with our messages).
bearer = HTTPBearer(auto_error=False, description="the server's token (VPT_TOKEN / --token-file), when one is set")


def check_token(request: Request, settings: Settings) -> None:
    """Mutating calls need `Authorization: Bearer <token>` when a token is configured (401 / 403 otherwise)."""
    if settings.token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            "this call needs the header 'Authorization: Bearer <token>' (the server's VPT_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), settings.token.get_secret_value().encode()):
        raise HTTPException(403, "the bearer token is not the one this server was started with")


async def require_token(
    request: Request, settings: SettingsDep, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> None:
    check_token(request, settings)


Authorized = Depends(require_token)


class TokenFirstRoute(APIRoute):
    """A route whose token check (when it depends on require_token) runs before its body is read and
    parsed: an unauthenticated client gets 401, never a 422 or 400 that describes its body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not any(dep.dependency is require_token for dep in self.dependencies):
            return handler

        async def token_first(request: Request) -> Response:
            check_token(request, request.app.state.settings)
            return await handler(request)

        return token_first
