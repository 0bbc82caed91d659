"""The model repository: which posteriors this server answers with, by name, and how one is (re)loaded.

A posterior is kilobytes to megabytes; the CLIP backbone is hundreds of megabytes and most of the
compute. So every served model is one posterior artifact over the ONE loaded backbone: the image
is encoded once, each model adds only its class cache and noise bank (app/engine/engine.py).

Where models come from (`VPT_MODELS_DIR` and `--posterior`):
- `<dir>/<name>.safetensors` is the model `name`;
- `<dir>/<name>/` is the model `name`, served from its newest artifact there (file names compared
  naturally: v2 before v10), so a new version is a new file beside the old ones;
- `--posterior FILE` is the model named by the file's stem (a repository of one);
- neither: zero-shot CLIP, the model "zeroshot".
A model's version is the first 12 hex digits of its artifact's sha256: two artifacts saved under one
file name are still told apart.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from training.artifact import ArtifactError

if TYPE_CHECKING:
    from app.config import Settings
    from app.engine.results import EngineProtocol
    from training.backbone import Backbone

log = logging.getLogger(__name__)

ARTIFACT_SUFFIX = ".safetensors"
ZEROSHOT = "zeroshot"
VERSION_DIGITS = 12
# Names appear in URL paths and metric labels: plain, short, and never taken from a request.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


Signature = tuple[int, int] | None  # a file's (mtime_ns, size); None: no file


class ModelLoadError(Exception):
    """A model could not be (re)loaded; the message names the file and the cause (safe to show)."""


@dataclass(frozen=True)
class ServedModel:
    """One model as served now. Immutable: a reload builds a new one and swaps it in, so a request
    that picked a model up finishes on that version."""

    name: str
    engine: EngineProtocol
    version: str
    sha256: str | None = None  # of the artifact file (None: an engine given in code)
    path: Path | None = None
    created_at: str | None = None  # the artifact's own creation time
    loaded_at: str = ""
    error: str | None = None  # why the last reload failed (this version keeps serving)
    signature: Signature = None  # the file's (mtime_ns, size) when loaded: how the watcher sees a change


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_signature(path: Path | None) -> Signature:
    """What a change of an artifact file is recognised by, without reading it."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st is not None else None


def release_freed_memory() -> None:
    """Return the heap that loading freed (the text passes' activations, a replaced version) to the OS.

    glibc keeps freed blocks in its arenas: with 100 models that left ~0.5 MB of resident memory per
    model beyond what the engines hold (bench/models.py). A no-op without glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def identity_version(identity: str) -> str:
    """The version of a model without an artifact (zero-shot, or an engine given in code)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:VERSION_DIGITS]


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def artifact_files(models_dir: Path | None, posterior: Path | None) -> tuple[dict[str, Path], list[str]]:
    """name -> artifact file, and a message for every file or folder that cannot be a model."""
    files: dict[str, Path] = {}
    problems: list[str] = []

    def put(name: str, path: Path) -> None:
        if name in files and files[name].resolve() == path.resolve():
            return  # --posterior names a file of the models folder: one model
        if not valid_name(name):
            problems.append(f"{path}: '{name}' is not a model name (letters, digits, '.', '_', '-'; at most 64)")
        elif name in files:
            problems.append(f"{path}: the model name '{name}' is already taken by {files[name]}")
        else:
            files[name] = path

    if posterior is not None:
        put(posterior.stem, posterior)
    if models_dir is not None:
        for entry in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
            if entry.is_file() and entry.suffix == ARTIFACT_SUFFIX:
                put(entry.stem, entry)
            elif entry.is_dir() and not entry.name.startswith("."):
                versions = sorted(entry.glob(f"*{ARTIFACT_SUFFIX}"), key=lambda p: _natural(p.name))
                if versions:
                    put(entry.name, versions[-1])
    return files, problems


def default_model_name(settings: Settings, names: list[str]) -> str:
    """VPT_DEFAULT_MODEL, else the --posterior file's model (the demo's), else the first name, else zero-shot.

    It also names the registry namespace that classes registered before registries had models move to,
    so it must not change between starts with the same settings."""
    if settings.default_model:
        return settings.default_model
    if settings.posterior is not None:
        return settings.posterior.stem
    if settings.demo:
        from training.shapes.prebuilt import POSTERIOR_FILE

        return Path(POSTERIOR_FILE).stem
    return names[0] if names else ZEROSHOT


class Repository(Protocol):
    """Where the service's models come from; loads run off the event loop (a thread of their own)."""

    default: str

    def files(self) -> dict[str, Path]: ...

    def load(self, name: str, path: Path | None) -> ServedModel: ...

    def load_all(self) -> tuple[list[ServedModel], list[str]]: ...


class FixedRepository:
    """One engine given in code (tests, or an embedding program): nothing to reload."""

    def __init__(self, name: str, engine: EngineProtocol | None = None, load: Callable[[], object] | None = None):
        if engine is None and load is None:
            raise ValueError("give an engine or a function that loads one")
        self.default = name
        self._engine, self._load = engine, load

    def files(self) -> dict[str, Path]:
        return {}

    def load(self, name: str, path: Path | None) -> ServedModel:
        if self._engine is None:
            self._engine = self._load()  # type: ignore[misc]
        engine = self._engine
        return ServedModel(name, engine, identity_version(str(engine.model_id)), loaded_at=now_iso())

    def load_all(self) -> tuple[list[ServedModel], list[str]]:
        return [self.load(self.default, None)], []


class ArtifactRepository:
    """The artifacts of VPT_MODELS_DIR and --posterior, each loaded onto one shared backbone.

    A file that does not fit the backbone, or cannot be read, is refused with a message naming the
    file and the mismatching field; the others still load. The default model must load.
    """

    def __init__(self, settings: Settings, load_backbone: Callable[[], Backbone]) -> None:
        self.settings = settings
        self._load_backbone = load_backbone
        self._backbone: Backbone | None = None
        self._initial: tuple[list[ServedModel], list[str]] | None = None
        names = sorted(self.files()) if settings.models_dir or settings.posterior else []
        self.default = default_model_name(settings, names)

    def backbone(self) -> Backbone:
        """The one backbone every model shares, loaded on first use."""
        if self._backbone is None:
            self._backbone = self._load_backbone()
        return self._backbone

    def files(self) -> dict[str, Path]:
        return self._scan()[0]

    def _scan(self) -> tuple[dict[str, Path], list[str]]:
        """The artifact files by name, and why the others of the repository are not models."""
        return artifact_files(self.settings.models_dir, self.settings.posterior)

    def load(self, name: str, path: Path | None) -> ServedModel:
        from app.engine.engine import Engine
        from training.artifact import read_metadata

        s = self.settings
        signature = file_signature(path)
        try:
            digest = file_sha256(path) if path is not None else None
            created = read_metadata(path).get("created_at") if path is not None else None
            engine = Engine.from_posterior(
                self.backbone(),
                path,
                max_samples=s.max_samples,
                seed=s.seed,
                cond_mode=s.cond_mode,
                linear_tolerance=s.linear_tolerance,
            )
        except (ArtifactError, OSError) as exc:
            raise ModelLoadError(f"model '{name}' refused: {exc}") from exc
        if file_signature(path) != signature:  # the file is read three times: they must be one content
            raise ModelLoadError(f"model '{name}' refused: {path} changed while it was loaded (copy it in atomically)")
        version = digest[:VERSION_DIGITS] if digest else identity_version(engine.model_id)
        return ServedModel(name, engine, version, digest, path, created, now_iso(), signature=signature)

    def preload(self) -> tuple[list[ServedModel], list[str]]:
        """Load every model now (vpt-serve does, before serving, to fail fast with the cause); the service's
        start-up then takes these from load_all()."""
        self._initial = self._load_all()
        return self._initial

    def load_all(self) -> tuple[list[ServedModel], list[str]]:
        """Every model of the repository and the refusals: the preloaded ones, handed out once (kept here,
        a version that a reload replaced would never be freed), else loaded now."""
        loaded, self._initial = self._initial, None
        return loaded if loaded is not None else self._load_all()

    def _load_all(self) -> tuple[list[ServedModel], list[str]]:
        models_dir = self.settings.models_dir
        if models_dir is not None and not models_dir.is_dir():
            raise ModelLoadError(f"VPT_MODELS_DIR {models_dir} is not a directory")
        files, refused = self._scan()
        if not files:
            if self.settings.models_dir is not None:
                raise ModelLoadError(
                    f"VPT_MODELS_DIR {self.settings.models_dir} holds no {ARTIFACT_SUFFIX} artifacts "
                    f"(<name>{ARTIFACT_SUFFIX} or <name>/<version>{ARTIFACT_SUFFIX}); {'; '.join(refused)}".rstrip("; ")
                )
            files = {ZEROSHOT: None}
        models = []
        for name, path in files.items():
            try:
                models.append(self.load(name, path))
            except ModelLoadError as exc:
                refused.append(str(exc))
        for message in refused:
            log.warning("%s", message)
        if self.default not in {m.name for m in models}:
            why = next((m for m in refused if f"'{self.default}'" in m), "no artifact has that name")
            raise ModelLoadError(f"the default model '{self.default}' could not be loaded: {why}")
        return models, refused


def signatures(files: dict[str, Path]) -> dict[str, Signature]:
    return {name: file_signature(path) for name, path in files.items()}


async def watch_repository(
    repository: Repository,
    poll_s: float,
    loaded: dict[str, Signature],
    changed: Callable[[str, Path], Awaitable[bool]],
) -> None:
    """Poll the repository's files every poll_s and call `changed(name, path)` for a file that changed or
    appeared since the last look (`loaded`: the signatures of the versions being served). A False answer
    means "not done, tell me again". Replace files atomically (write beside, then rename): a half-copied
    file fails to load and is tried again when it changes again. Runs until cancelled."""
    seen = {**signatures(repository.files()), **loaded}
    while True:
        await asyncio.sleep(poll_s)
        try:
            files = await asyncio.to_thread(repository.files)
            now = await asyncio.to_thread(signatures, files)
            for name, signature in now.items():
                if seen.get(name) != signature and not await changed(name, files[name]):
                    now[name] = seen.get(name)
            seen = now
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checking the model repository failed; trying again in %.1f s", poll_s)
