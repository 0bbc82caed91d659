"""The service behind the routes: models + batcher + registry + metrics, no HTTP.

Pre (decode + preprocess, thread pool) -> core (one batched backbone pass for every request of
the batch, whatever model it asked for, then each model's head on its rows; the one model thread)
-> post (top-k, prediction set, metrics). The class registry is the source of truth, shared by every
replica: a class change is written to it first (beside the model thread, so a stalled database never
holds up classify), then `sync` brings every model's classes to the registry's snapshot on the model
thread, between batches, and records the snapshot's version there too, so each answer names the
registry version of exactly the classes it was scored against (app/sync.py follows other replicas'
writes the same way). A model reload is loaded and warmed on a thread of its
own, then swapped in with one assignment: a request keeps the model version it picked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from app.batcher import Batcher, BatcherClosedError, BatchStats, QueueFullError, RequestTimeoutError
from app.config import Settings
from app.decision import Decision, Fallback, decide, unknown_rule
from app.engine.errors import InvalidClassNameError, NoClassesError
from app.images import ImageTooLargeError, decode_image
from app.metrics import Metrics
from app.model_info import answering_model, model_entry, trained_classes
from app.models import (
    ModelLoadError,
    Repository,
    ServedModel,
    release_freed_memory,
    watch_repository,
)
from app.names import find, normalize_name, unique
from app.refusals import (
    ClassNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    PrepareFailedError,
    RegistryWaitError,
    ReloadFailedError,
    cause,
)
from app.registry import ClassRegistry, RegistryError, RegistryUnavailableError
from app.sync import ClassSync, RegistryFollower, valid_names

if TYPE_CHECKING:
    from app.engine.results import EngineProtocol, Prediction

log = logging.getLogger(__name__)

T = TypeVar("T")

START_RETRY_MAX_S = 5.0  # at start-up, an unreachable registry is retried at least this often

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass(frozen=True)
class _Job:
    image: torch.Tensor  # [3, H, W]
    samples: int | str
    models: tuple[ServedModel, ...]  # picked up at submit time: a reload never changes a request's version


# Per model of the job: its prediction (or why it failed on it) and the registry version of the classes it scored.
_Answer = tuple[tuple["Prediction | Exception", "int | None"], ...]


class Service:
    def __init__(self, settings: Settings, metrics: Metrics, registry: ClassRegistry, repository: Repository) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.repository = repository
        self.default = repository.default
        self._models: dict[str, ServedModel] = {}  # replaced, never changed in place (copy on write)
        self.refused: list[str] = []  # artifacts of the repository that are not served, and why
        self.state = LOADING
        self.failure: str | None = None  # why preparing failed, as /readyz tells it
        self.waiting: str | None = None  # why start-up is waiting for the registry (it retries by itself)
        self._follower: RegistryFollower | None = None
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="vpt-decode")
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="vpt-load")  # reloads, beside the model thread
        self._decode_count_lock = threading.Lock()
        self._decoding = 0  # uploads decoding or waiting for a decode thread
        self._mutation_lock = asyncio.Lock()  # class changes and reloads, one at a time
        self._prepare_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self.batcher: Batcher[_Job, _Answer] = Batcher(
            self._predict_batch,
            settings.max_batch_size,
            settings.max_queue_delay_s,
            settings.max_queue,
            on_batch=self._observe_batch,
            on_queue_depth=metrics.queue_depth.set,
        )
        # the served models' class sets as a cache of the registry, and per engine the version they equal
        self._sync = ClassSync(
            registry,
            self._mutation_lock,
            self.batcher.run_exclusive,
            lambda: list(self._models.values()),
            self._model_metrics,
            metrics.registry_version,
        )
        self.sync = self._sync.sync
        metrics.ready.set(0)
        self._fallback = Fallback(settings.uncertainty_measure, settings.uncertainty_threshold)

    # life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher and, in the background, load + restore classes + warm up."""
        await self.batcher.start()
        self._prepare_task = asyncio.create_task(self._prepare(), name="vpt-prepare")

    async def wait_ready(self) -> str:
        if self._prepare_task is not None:
            await asyncio.shield(self._prepare_task)
        return self.state

    async def stop(self) -> None:
        for task in (self._prepare_task, self._watch_task):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._prepare_task, self._watch_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._follower is not None:
            await self._follower.close()
        await self.batcher.stop()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        # a load or warm-up in progress: waited for off the loop (the batcher stops the same way)
        await asyncio.to_thread(self._load_pool.shutdown, True, cancel_futures=True)
        self.registry.close()

    async def _prepare(self) -> None:
        try:
            models, self.refused = await self.batcher.run_exclusive(self.repository.load_all)
            for model in models:
                await self._until_registry(lambda m=model: self.batcher.run_exclusive(self._restore_classes, m))
                await self.batcher.run_exclusive(model.engine.warmup)
            await self.batcher.run_exclusive(release_freed_memory)
            self._models = {m.name: m for m in sorted(models, key=lambda m: m.name)}
            await self._until_registry(self.sync)  # the version the restored classes belong to
        except Exception as exc:
            log.exception("the model could not be prepared; /readyz stays 503")
            self.failure = cause(exc)
            self.state = FAILED
            return
        for model in models:
            self._model_metrics(model)
        self.metrics.models.set(len(self._models))
        self.state = READY
        self.metrics.ready.set(1)
        if self.settings.models_poll_s > 0 and self.repository.files():
            # the served versions as loaded (vpt-serve loads before it serves): a change in between is a change
            loaded = {m.name: m.signature for m in self._models.values() if m.path is not None}
            watch = watch_repository(self.repository, self.settings.models_poll_s, loaded, self._file_changed)
            self._watch_task = asyncio.create_task(watch, name="vpt-models-watch")
        self._follower = RegistryFollower(
            self.registry, self.sync, asyncio.get_running_loop(), self.settings.registry_poll_s
        )
        self._follower.start()
        self.metrics.registry_up.set_function(lambda: float(self.registry_reason() is None))
        log.info("ready: %d models (default %s)", len(self._models), self.default)

    async def _until_registry(self, step: Callable[[], Awaitable[T]]) -> T:
        """At start-up, wait for a registry that is not reachable yet (a database starting beside us): /readyz
        answers 503 with the reason meanwhile, and the replica comes up by itself once it answers. Other
        failures end the start as before."""
        delay = 0.25
        while True:
            try:
                result = await step()
            except RegistryUnavailableError as exc:
                if self.waiting is None:
                    log.warning("%s; start-up retries until it answers", exc)
                self.waiting = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX_S)
                continue
            if self.waiting is not None:
                log.info("class registry %s reachable: start-up goes on", self.registry.location)
            self.waiting = None
            return result

    def _restore_classes(self, model: ServedModel) -> None:
        """Seed a model's namespace of the registry on first start, then load its classes into the engine
        (skipping names the model cannot take). The default model is seeded with VPT_CLASSES when given,
        every model else with the classes its posterior was trained on."""
        engine = model.engine
        initial = (self.settings.classes if model.name == self.default else []) or trained_classes(engine)
        seeded = self.registry.seed(model.name, valid_names(engine, initial, "initial class"))
        if seeded:
            log.info("model %s: registered %d initial classes in %s", model.name, len(seeded), self.registry.location)
        engine.set_classes(valid_names(engine, self.registry.names(model.name), "registered class"))

    def _model_metrics(self, model: ServedModel) -> None:
        """Gauges that follow a model and its class set (re-set on every change; labels only of served models)."""
        m, engine, name = self.metrics, model.engine, model.name
        measure, threshold = unknown_rule(engine.calibration, self._fallback)
        m.unknown_threshold.labels(name, measure).set(threshold)
        m.unknown.labels(name, measure)  # exported as 0 before the first one
        m.classes.labels(name).set(len(engine.classnames))
        m.calibrated.labels(name).set(int(engine.calibrated))
        error = getattr(engine, "linear_error", None)
        if error is not None:
            m.linear_error.labels(name).set(error)
        m.linear_active.labels(name).set(getattr(engine, "active_cond_mode", "exact") == "linear")
        m.model.labels(name).info(
            {
                "variant": engine.variant,
                "version": model.version,
                "model_id": str(engine.model_id),
                "max_samples": str(engine.max_samples),
                "device": str(getattr(engine, "device", self.settings.device)),
            }
        )

    def _require_ready(self) -> None:
        if self.state == FAILED:
            raise PrepareFailedError(self.failure)
        if self.state != READY:
            raise RegistryWaitError(self.waiting) if self.waiting else NotReadyError()

    def model(self, name: str | None = None) -> ServedModel:
        """The served model called `name` (None: the default one); ModelNotFoundError names the served ones."""
        self._require_ready()
        models = self._models
        found = models.get(self.default if name is None else name)
        if found is None:
            raise ModelNotFoundError(str(name), list(models))
        return found

    def model_names(self) -> list[str]:
        self._require_ready()
        return list(self._models)

    def model_info(self, name: str | None = None, model: ServedModel | None = None) -> dict[str, Any]:
        """What an answer and /readyz say about the model that answered (`model`, else the one named)."""
        return answering_model(model or self.model(name), self._fallback)

    def describe(self, name: str) -> dict[str, Any]:
        """GET /models/{name}."""
        return model_entry(self.model(name))

    def catalogue(self) -> dict[str, Any]:
        """GET /models."""
        models = [model_entry(self.model(n)) for n in self.model_names()]
        return {"default": self.default, "models": models, "refused": list(self.refused)}

    # classify ---------------------------------------------------------------------------------

    async def classify(
        self,
        data: bytes,
        top_k: int | None = None,
        samples: int | str | None = None,
        alpha: float | None = None,
        models: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One answer per model asked (default: the default model), all from one decode and one image encode."""
        chosen = tuple(self.model(name) for name in dict.fromkeys(models or [None]))
        alpha = self.settings.alpha if alpha is None else alpha
        if not 0 < alpha < 1:
            raise InvalidRequestError(f"alpha must be strictly between 0 and 1 (coverage 1 - alpha); got {alpha}")
        limit = min([self.settings.max_samples] + [m.engine.max_samples for m in chosen])
        samples = self.settings.samples if samples is None else samples
        if samples != "auto" and not 1 <= samples <= limit:
            raise InvalidRequestError(f"samples must be between 1 and {limit}; got {samples}")
        for model in chosen:
            if not model.engine.classnames:
                raise NoClassesError(f"model {model.name} has no classes registered")
        if len(data) > self.settings.max_image_bytes:
            raise ImageTooLargeError()
        deadline = time.monotonic() + self.settings.request_timeout_s  # covers decoding and the model
        try:
            image = await asyncio.wait_for(self._decode(data, chosen[0].engine), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeoutError() from None
        try:
            answers = await self.batcher.submit(_Job(image, samples, chosen), max(deadline - time.monotonic(), 0.001))
        except QueueFullError:
            self.metrics.queue_rejected.inc()
            raise
        failed = next((p for p, _ in answers if isinstance(p, Exception)), None)
        if failed is not None:
            raise failed
        return [
            {**self._answer(m, p, top_k, alpha), "registry_version": version}  # type: ignore[arg-type]
            for m, (p, version) in zip(chosen, answers)
        ]

    def _answer(self, model: ServedModel, prediction: Prediction, top_k: int | None, alpha: float) -> dict[str, Any]:
        decision = decide(prediction, model.engine.calibration, alpha, self._fallback)
        self._observe_prediction(model.name, prediction, decision)
        classes = prediction.classes if top_k is None else prediction.classes[:top_k]
        return {
            "classes": [
                {"label": c.label, "probability": c.probability, "variance": c.variance, "std": c.std} for c in classes
            ],
            "entropy": prediction.entropy,
            "expected_entropy": prediction.expected_entropy,
            "mutual_information": prediction.mutual_information,
            "energy": prediction.energy,
            "prediction_set": decision.prediction_set,
            "coverage": 1.0 - decision.alpha,
            "calibrated": decision.calibrated,
            "unknown": decision.unknown,
            "unknown_score": decision.unknown_score,
            "unknown_measure": decision.unknown_measure,
            "samples": prediction.samples,
            "model": self.model_info(model=model),
        }

    async def _decode(self, data: bytes, engine: EngineProtocol) -> torch.Tensor:
        """Decode + preprocess on the pool; admitted only while fewer than decode_threads + max_decode_queue
        uploads are decoding or waiting to (QueueFullError, a 503, otherwise: bounded CPU and memory)."""
        with self._decode_count_lock:
            if self._decoding >= self.settings.decode_threads + self.settings.max_decode_queue:
                self.metrics.queue_rejected.inc()
                raise QueueFullError()
            self._decoding += 1
        try:
            work = self._decode_pool.submit(self._preprocess, data, engine)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._decode_finished(None)
            raise BatcherClosedError() from None
        work.add_done_callback(self._decode_finished)  # counted until the thread is done, even if the caller left
        return await asyncio.wrap_future(work)

    def _decode_finished(self, _work: object) -> None:
        with self._decode_count_lock:
            self._decoding -= 1

    def _preprocess(self, data: bytes, engine: EngineProtocol) -> torch.Tensor:
        s = self.settings
        return engine.preprocess(decode_image(data, s.max_image_pixels, s.max_image_aspect_ratio))

    def _predict_batch(self, jobs: list[_Job]) -> list[_Answer]:
        """One backbone pass for the whole batch (every model shares the backbone), then each model's head
        on the rows that asked for it. A model that fails fails only its own answers."""
        feats = jobs[0].models[0].engine.encode(torch.stack([job.image for job in jobs]))
        answers: list[list[tuple[Prediction | Exception, int | None] | None]] = [[None] * len(j.models) for j in jobs]
        heads: dict[int, tuple[EngineProtocol, list[tuple[int, int]]]] = {}
        for i, job in enumerate(jobs):
            for k, model in enumerate(job.models):
                heads.setdefault(id(model.engine), (model.engine, []))[1].append((i, k))
        for engine, members in heads.values():
            rows = [i for i, _ in members]
            version = self._sync.version_of(engine)  # on the model thread: the version of its classes
            try:
                predictions: Sequence[Prediction | Exception] = engine.predict_features(
                    feats[torch.tensor(rows, device=feats.device)], [jobs[i].samples for i in rows]
                )
            except Exception as exc:  # e.g. the model's last class was removed after the request was checked
                predictions = [exc] * len(rows)
            for (i, k), prediction in zip(members, predictions):
                answers[i][k] = (prediction, version)
        return [tuple(a) for a in answers]  # type: ignore[misc]

    def _observe_batch(self, stats: BatchStats) -> None:
        m = self.metrics
        m.batch_size.observe(stats.size)
        m.inference.observe(stats.seconds)
        for wait in stats.queue_waits:
            m.queue_wait.observe(wait)

    def _observe_prediction(self, name: str, p: Prediction, d: Decision) -> None:
        m = self.metrics
        m.samples.labels(name).observe(p.samples)
        m.entropy.labels(name).observe(p.entropy)
        m.mutual_information.labels(name).observe(p.mutual_information)
        m.set_size.labels(name).observe(len(d.prediction_set))
        m.calibrated.labels(name).set(int(d.calibrated))
        m.unknown_threshold.labels(name, d.unknown_measure).set(d.unknown_threshold)
        if d.unknown:
            m.unknown.labels(name, d.unknown_measure).inc()

    # models -------------------------------------------------------------------------------------

    async def reload(self, name: str) -> dict[str, Any]:
        """Load the model's artifact file anew on a thread of its own (requests keep being answered), bring
        the new version to the registered classes, warm it up, then swap it in. A failed load keeps the
        old version serving and is reported (log, metric, GET /models, and this call's 422)."""
        current = self.model(name)
        path = self.repository.files().get(name, current.path)
        if path is None:
            raise InvalidRequestError(f"model {name} was not loaded from an artifact file: there is nothing to reload")
        async with self._mutation_lock:
            current = self.model(name)  # a reload that waited for the lock starts from the newest version
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(self._load_pool, self._load_warm, name, path, current)
            except Exception as exc:
                message = (
                    f"reload of model {name} from {path} failed, version {current.version} keeps serving: {cause(exc)}"
                )
                log.error("%s", message, exc_info=not isinstance(exc, ModelLoadError))
                self._models = {**self._models, name: replace(current, error=message)}
                self.metrics.reloads.labels(name, "failed").inc()
                raise ReloadFailedError(message) from None
            changed = new.engine is not current.engine  # not when only a failed reload's error was cleared
            if new is not current:
                self._models = {**self._models, name: new}  # the swap: requests from now on get the new version
            if changed:
                self._model_metrics(new)
                self.metrics.reloads.labels(name, "swapped").inc()
                log.info("model %s: version %s -> %s", name, current.version, new.version)
                await loop.run_in_executor(self._load_pool, release_freed_memory)
        return {"name": name, "version": new.version, "previous_version": current.version, "changed": changed}

    def _load_warm(self, name: str, path: Path, current: ServedModel) -> ServedModel:
        """The new version, ready to answer (or `current` itself when the file's content did not change)."""
        new = self.repository.load(name, path)
        if new.sha256 is not None and new.sha256 == current.sha256:
            return current if current.error is None else replace(current, error=None)
        # the classes the serving version has: they belong to registry_version (the mutation lock keeps sync
        # out meanwhile), and a reload works while the database is down; sync brings both to newer ones
        new.engine.set_classes(valid_names(new.engine, current.engine.classnames, "registered class"))
        self._sync.inherit(new.engine, current.engine)
        new.engine.warmup()
        return new

    async def _add_model(self, name: str, path: Path) -> bool:
        """A model whose artifact appeared in the repository after start: loaded, seeded, warmed, served.
        False when the class registry was unreachable: the watcher tries this file again at its next look."""
        async with self._mutation_lock:
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._load_pool, self.repository.load, name, path)
                await loop.run_in_executor(self._load_pool, self._restore_classes, model)
                await loop.run_in_executor(self._load_pool, model.engine.warmup)
                await loop.run_in_executor(self._load_pool, release_freed_memory)
            except Exception as exc:
                message = f"model '{name}' not served: {cause(exc)}"
                if message not in self.refused:
                    log.error("%s", message)
                    self.refused = [*[r for r in self.refused if f"'{name}'" not in r], message]
                return not isinstance(exc, RegistryUnavailableError)
            self._models = dict(sorted({**self._models, name: model}.items()))
            self.refused = [r for r in self.refused if f"'{name}'" not in r]
            self._model_metrics(model)
            self.metrics.models.set(len(self._models))
            log.info("model %s (version %s) added from %s", name, model.version, path)
        try:
            await self.sync()  # its classes were read apart from the others': bring all to one version
        except RegistryError as exc:
            log.warning("model %s: class registry sync failed (%s); the registry watcher retries", name, exc)
        return True

    async def _file_changed(self, name: str, path: Path) -> bool:
        """The repository watcher saw `name`'s file change (or appear): reload it, or add the new model.
        False: not done yet (the registry was unreachable), the watcher hands it over again."""
        if name not in self._models:
            return await self._add_model(name, path)
        log.info("model %s: its artifact changed, reloading", name)
        try:
            await self.reload(name)
        except ReloadFailedError:
            pass  # reported by reload; retried when the file changes again
        return True

    # classes ----------------------------------------------------------------------------------

    def list_classes(self, model: str | None = None) -> list[str]:
        return list(self.model(model).engine.classnames)

    def _normalize_request(self, engine: EngineProtocol, names: Sequence[str]) -> list[str]:
        if not names:
            raise InvalidRequestError('"names" is empty: give at least one class name')
        if len(names) > self.settings.max_names_per_call:
            raise InvalidRequestError(
                f'"names" holds {len(names)} names; at most {self.settings.max_names_per_call} per call'
            )
        normalized = []
        for i, name in enumerate(names):
            try:
                normalized.append(engine.normalize_name(name))
            except InvalidClassNameError as exc:  # its message quotes the name through app.names.show
                raise InvalidRequestError(f"names[{i}]: {exc}") from None
        return unique(normalized)

    async def add_classes(self, names: Sequence[str], model: str | None = None) -> dict[str, Any]:
        """Register names zero-shot for a model; names already registered are left alone (idempotent)."""
        served = self.model(model)
        wanted = self._normalize_request(served.engine, names)
        # Every wanted name goes to the registry, even those this replica has: it decides (another replica may
        # have deleted one). Off the model thread and outside the mutation lock: the registry orders writers and
        # checks the limit in the transaction (RegistryLimitError, a 409; this replica's count may be behind);
        # a dead database costs this request its retry budget, nobody else.
        added = await asyncio.to_thread(self.registry.add, served.name, wanted, self.settings.max_classes)
        await self._follow_write()
        return {"added": added, "classes": self.list_classes(model)}

    async def remove_class(self, name: str, model: str | None = None) -> dict[str, Any]:
        """Remove the class `name` names (any case or Unicode form of it); answers the name as registered."""
        served = self.model(model)
        try:
            normalized = normalize_name(name)
        except InvalidClassNameError as exc:
            raise InvalidRequestError(str(exc)) from None
        registered = find(normalized, served.engine.classnames)
        removed = await asyncio.to_thread(self.registry.remove, served.name, registered or normalized)
        if not removed and registered is None:
            raise ClassNotFoundError(normalized, served.name)
        await self._follow_write()  # not removed but known here: another replica removed it just now
        return {"removed": registered or normalized, "classes": self.list_classes(model)}

    async def _follow_write(self) -> None:
        """After a committed write: sync (its snapshot holds the write, and whatever other replicas wrote), so
        this replica answers with the change at once. If the registry went away right after the write, the
        write stands and the watcher catches up when it is back."""
        try:
            await self.sync()
        except RegistryError as exc:
            log.warning("class registry sync after a write failed (%s); the registry watcher retries", exc)

    # following the registry -------------------------------------------------------------------

    @property
    def registry_version(self) -> int | None:
        """The registry version every served model's classes equal (what the last sync reached)."""
        return self._sync.version

    def registry_reason(self) -> str | None:
        """Why this replica may be behind the registry now (database unreachable, ...); None when following."""
        return self._follower.reason if self._follower is not None else None
