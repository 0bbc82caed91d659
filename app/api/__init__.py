"""HTTP layer: create_app() and its routes; all logic lives in app.service."""

from app.api.app import create_app

__all__ = ["create_app"]
