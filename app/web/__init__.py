"""The browser page (GET /) and its assets, served by the API app itself."""

from app.web.router import router

__all__ = ["router"]
