"""vpt-serve: serve a posterior (or zero-shot CLIP) over HTTP.

Every setting is a flag and a VPT_* environment variable (flag wins): `--max-batch-size 8` or
`VPT_MAX_BATCH_SIZE=8`. Files are checked and the weights loaded before the server binds, so
a mistake ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import sys
import typing
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from queue import Queue

from pydantic import SecretStr, ValidationError

from app.config import Settings

log = logging.getLogger("app.cli")


class _Listener(QueueListener):
    def stop(self) -> None:
        """Idempotent: stopped early to flush, and again at exit."""
        if self._thread is not None:
            super().stop()


def configure_logging(level: str) -> QueueListener:
    """Log lines are formatted and written by a background thread (QueueListener), so the event loop
    only enqueues a record per request line and never waits on stderr. Stop the returned listener
    to flush it (e.g. before a final error line, which must come last)."""
    queue: Queue = Queue(-1)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    listener = _Listener(queue, handler, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(queue)]
    root.setLevel(level.upper())
    return listener


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """One flag per Settings field, generated so flags, env vars and defaults cannot drift apart."""
    parser = argparse.ArgumentParser(
        prog="vpt-serve",
        description=__doc__.split("\n\n")[0],
        epilog="Each flag is also read from VPT_<NAME> (e.g. VPT_DATA_DIR); flags win.",
        argument_default=argparse.SUPPRESS,
    )
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        default = field.default if field.default_factory is None else field.default_factory()
        env = f"VPT_{name.upper()}"
        shown = str(default) if isinstance(default, Path) else repr(default)
        help_text = f"{field.description or name} [env {env}; default {shown}]"
        if annotation is bool:
            parser.add_argument(_flag(name), action="store_true", help=help_text)
            continue
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
        if name == "token" and default is None:
            help_text = help_text.replace("default None", "default none; prefer --token-file or the env var")
        parser.add_argument(_flag(name), choices=choices, help=help_text, metavar=None if choices else name.upper())
    return parser


def _settings_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if str(p)]
        where = f"{_flag(loc[0])} / VPT_{loc[0].upper()}: " if loc else ""
        parts.append(where + err.get("msg", "invalid").removeprefix("Value error, "))
    return "; ".join(parts)


def _apply_demo(settings: Settings) -> Settings:
    from app.demo import prepare_demo

    demo = prepare_demo(settings.data_dir, say=lambda line: print(line, file=sys.stderr, flush=True))
    update = {
        "backbone": str(demo.backbone),
        "weights": str(demo.weights),
        "posterior": demo.posterior,
        "classes": settings.classes or demo.classnames,
        "registry": settings.registry or demo.registry,
    }
    return settings.model_copy(update=update)


def load_repository(settings: Settings):
    """The model repository of the settings; its load_all() loads the backbone (weights from a local file
    or a filled cache: no network needed) and every model on it."""
    from app.models import ArtifactRepository
    from training.backbone import load_backbone
    from training.cli_common import resolve_device

    device = str(resolve_device(settings.device))
    cache_dir = str(settings.cache_dir) if settings.cache_dir else None
    return ArtifactRepository(settings, lambda: load_backbone(settings.backbone, settings.weights, device, cache_dir))


def _user_errors() -> tuple[type[BaseException], ...]:
    from app.engine.errors import EngineError
    from app.models import ModelLoadError
    from app.registry import RegistryError
    from training.artifact import ArtifactError
    from training.backbone import BackboneError
    from training.data import DataError
    from training.shapes.prebuilt import PrebuiltError
    from training.text_tower import PromptError

    return (
        BackboneError,
        ArtifactError,
        EngineError,
        ModelLoadError,
        RegistryError,
        PrebuiltError,
        DataError,
        PromptError,
        FileNotFoundError,
        ValueError,
    )


def check_registry(settings: Settings, legacy_model: str) -> None:
    """An unwritable SQLite file or a malformed database URL stops the start (RegistryError: exit 2); a
    database that is not reachable yet does not: the replica starts, /readyz answers 503 with the reason
    and the service keeps trying, so it comes up by itself with the database (compose, Kubernetes)."""
    from app.registry import RegistryUnavailableError, open_registry

    registry = open_registry(settings.registry_path, legacy_model=legacy_model)
    try:
        registry.version()
    except RegistryUnavailableError as exc:
        log.warning("%s; starting anyway: /readyz answers 503 until the class registry is reachable", exc)
    finally:
        registry.close()


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        settings = Settings(**args)
    except ValidationError as exc:
        print(f"error: {_settings_error(exc)}", file=sys.stderr)
        return 2
    listener = configure_logging(settings.log_level)
    errors = _user_errors()
    try:
        if settings.demo:
            settings = _apply_demo(settings)
        if settings.posterior is not None and not Path(settings.posterior).is_file():
            raise FileNotFoundError(f"posterior artifact not found: {settings.posterior}")
        repository = load_repository(settings)
        check_registry(settings, repository.default)
        models, refused = repository.preload()  # a bad default model fails here, with its cause
    except errors as exc:
        listener.stop()  # what was logged before the failure is written before the error line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return serve(settings, repository, len(models), len(refused))


def serve(settings: Settings, repository, served: int, refused: int) -> int:
    import uvicorn

    from app.api import create_app
    from app.registry import location_of
    from app.server import bind, uvicorn_config

    config = uvicorn_config(create_app(settings, repository=repository), settings)
    sock, port = bind(config)
    token = "required" if isinstance(settings.token, SecretStr) else "not required"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info(
        "serving %d models (default %s%s) on http://%s:%d (registry %s; token %s)",
        served,
        repository.default,
        f"; {refused} refused" if refused else "",
        host,
        port,
        location_of(settings.registry_path),
        token,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
