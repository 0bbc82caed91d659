"""Dependencies as short Annotated aliases, so a route's signature reads as its needs.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
request for what is an attribute lookup.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.config import Settings
from app.service import Service


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_token(request: Request, settings: SettingsDep) -> None:
    """Mutating calls need `Authorization: Bearer <token>` when a token is configured."""
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


Authorized = Depends(require_token)
