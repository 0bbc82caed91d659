"""Dependencies as short Annotated aliases, so a route's signature reads as its needs."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.config import Settings
from app.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_token(request: Request, settings: SettingsDep) -> None:
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
