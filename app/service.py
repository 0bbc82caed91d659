"""The service behind the routes: engine + batcher + registry + metrics, no HTTP.

Pre (decode + preprocess, thread pool) -> core (batched forward pass, the one model thread)
-> post (top-k, metrics). Class changes run on the model thread too, between batches, and
are written to the registry in the same step, so the registry and the engine never disagree
about a request that was answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from app.batcher import Batcher, BatcherClosedError, BatchStats, QueueFullError, RequestTimeoutError
from app.config import Settings, default_model_name
from app.decision import Decision, Fallback, decide, unknown_rule
from app.engine.errors import EngineError, InvalidClassNameError, NoClassesError
from app.images import ImageTooLargeError, decode_image
from app.metrics import Metrics
from app.names import find, name_key, normalize_name, show, unique
from app.registry import ClassRegistry, RegistryError

if TYPE_CHECKING:
    from app.engine.engine import Engine
    from app.engine.results import Prediction

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


class NotReadyError(Exception):
    """The model is loading (or failed to load); requests that need it wait for /readyz."""


class PrepareFailedError(NotReadyError):
    """Start-up failed for good; the message names the cause (our own text: registry or model errors)."""


class InvalidRequestError(Exception):
    """A request the service refuses with a message written here (safe to show the client)."""


class ClassLimitError(InvalidRequestError):
    """Registering would exceed the configured number of classes."""


class ClassNotFoundError(InvalidRequestError):
    def __init__(self, name: str) -> None:
        super().__init__(f"class {show(name)} is not registered (GET /classes lists them)")


def _failure_cause(exc: Exception) -> str:
    """What /readyz says about a failed start: our own registry and engine messages in full; for
    anything else only its type (library exception text stays in the log)."""
    if isinstance(exc, RegistryError | EngineError):
        return str(exc)
    return f"{type(exc).__name__} while loading the model"


@dataclass(frozen=True)
class _Job:
    image: torch.Tensor  # [3, H, W]
    samples: int


class Service:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: ClassRegistry,
        engine: Engine | None = None,
        load_engine: Callable[[], Engine] | None = None,
        initial_classes: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        if engine is None and load_engine is None:
            raise ValueError("give an engine or a function that loads one")
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        # The one model served today: its namespace in the registry (the multi-model service replaces this).
        self.model_name = default_model_name(settings)
        self.engine = engine
        self._load_engine = load_engine
        self._initial_classes = initial_classes or self._default_initial_classes
        self.state = LOADING
        self.failure: str | None = None  # why preparing failed, as /readyz tells it
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="vpt-decode")
        self._decode_count_lock = threading.Lock()
        self._decoding = 0  # uploads decoding or waiting for a decode thread
        self._mutation_lock = asyncio.Lock()
        self._prepare_task: asyncio.Task | None = None
        self.batcher: Batcher[_Job, Prediction] = Batcher(
            self._predict_batch,
            settings.max_batch_size,
            settings.max_queue_delay_s,
            settings.max_queue,
            on_batch=self._observe_batch,
            on_queue_depth=metrics.queue_depth.set,
        )
        m = metrics
        m.ready.set(0)
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
        if self._prepare_task is not None and not self._prepare_task.done():
            self._prepare_task.cancel()
        await self.batcher.stop()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self.registry.close()

    async def _prepare(self) -> None:
        try:
            if self.engine is None:
                assert self._load_engine is not None
                self.engine = await self.batcher.run_exclusive(self._load_engine)
            await self.batcher.run_exclusive(self._restore_classes)
            await self.batcher.run_exclusive(self.engine.warmup)
        except Exception as exc:
            log.exception("the model could not be prepared; /readyz stays 503")
            self.failure = _failure_cause(exc)
            self.state = FAILED
            return
        engine = self.engine
        measure, threshold = self._unknown_rule()
        self.metrics.unknown_threshold.labels(measure).set(threshold)
        self.metrics.unknown.labels(measure)  # exported as 0 before the first one
        self.metrics.model.info(
            {
                "variant": engine.variant,
                "model_id": str(engine.model_id),
                "max_samples": str(engine.max_samples),
                "device": str(getattr(engine, "device", self.settings.device)),
            }
        )
        self.state = READY
        self.metrics.ready.set(1)
        log.info("ready: %s (%s), %d classes", engine.variant, engine.model_id, len(engine.classnames))

    def _default_initial_classes(self) -> Sequence[str]:
        """VPT_CLASSES when given, else the classes the posterior was trained on."""
        return self.settings.classes or list(getattr(self.engine, "trained_classnames", []))

    def _restore_classes(self) -> None:
        """Seed a new registry, then load its classes into the engine (skipping names the model cannot take)."""
        assert self.engine is not None
        seeded = self.registry.seed(self.model_name, self._valid_names(self._initial_classes(), "initial class"))
        if seeded:
            log.info("new class registry %s: registered %d initial classes", self.registry.location, len(seeded))
        names = self._valid_names(self.registry.names(self.model_name), "registered class")
        self.engine.set_classes(names)
        self._class_metrics()

    def _class_metrics(self) -> None:
        """Gauges that follow the class set: its size and the linear pass's guard (re-measured on every change)."""
        assert self.engine is not None
        self.metrics.classes.set(len(self.engine.classnames))
        error = getattr(self.engine, "linear_error", None)
        if error is not None:
            self.metrics.linear_error.set(error)
        self.metrics.linear_active.set(getattr(self.engine, "active_cond_mode", "exact") == "linear")

    def _valid_names(self, names: Sequence[str], what: str) -> list[str]:
        assert self.engine is not None
        valid = []
        for name in names:
            try:
                valid.append(self.engine.normalize_name(name))
            except InvalidClassNameError as exc:
                log.warning("%s skipped: %s", what, exc)
        return unique(valid)

    def _require_engine(self) -> Engine:
        if self.state == FAILED:
            raise PrepareFailedError(self.failure)
        if self.state != READY or self.engine is None:
            raise NotReadyError()
        return self.engine

    def _unknown_rule(self) -> tuple[str, float]:
        return unknown_rule(self.engine.calibration if self.engine is not None else None, self._fallback)

    def model_info(self) -> dict[str, Any]:
        engine = self._require_engine()
        cal = engine.calibration
        measure, threshold = self._unknown_rule()
        calibration = None
        if cal is not None:
            calibration = {
                "temperature": cal.temperature,
                "method": cal.method,
                "held_out_images": len(cal.scores),
                "classes": len(cal.classnames),
                "matches_registered_classes": engine.calibrated,
                "false_alarm": cal.false_alarm,
            }
        return {
            "variant": engine.variant,
            "id": str(engine.model_id),
            "max_samples": engine.max_samples,
            "text_pass": getattr(engine, "active_cond_mode", "exact"),
            "linear_error": getattr(engine, "linear_error", None),
            "calibration": calibration,
            "unknown_measure": measure,
            "unknown_threshold": threshold,
        }

    # classify ---------------------------------------------------------------------------------

    async def classify(
        self, data: bytes, top_k: int | None = None, samples: int | str | None = None, alpha: float | None = None
    ) -> dict[str, Any]:
        engine = self._require_engine()
        alpha = self.settings.alpha if alpha is None else alpha
        if not 0 < alpha < 1:
            raise InvalidRequestError(f"alpha must be strictly between 0 and 1 (coverage 1 - alpha); got {alpha}")
        limit = min(self.settings.max_samples, engine.max_samples)
        samples = self.settings.samples if samples is None else samples
        if samples != "auto" and not 1 <= samples <= limit:
            raise InvalidRequestError(f"samples must be between 1 and {limit}; got {samples}")
        if not engine.classnames:
            raise NoClassesError("no classes registered")
        if len(data) > self.settings.max_image_bytes:
            raise ImageTooLargeError()
        deadline = time.monotonic() + self.settings.request_timeout_s  # covers decoding and the model
        try:
            image = await asyncio.wait_for(self._decode(data), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeoutError() from None
        try:
            prediction = await self.batcher.submit(_Job(image, samples), max(deadline - time.monotonic(), 0.001))
        except QueueFullError:
            self.metrics.queue_rejected.inc()
            raise
        decision = decide(prediction, engine.calibration, alpha, self._fallback)
        self._observe_prediction(prediction, decision)
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
            "model": self.model_info(),
        }

    async def _decode(self, data: bytes) -> torch.Tensor:
        """Decode + preprocess on the pool; admitted only while fewer than decode_threads + max_decode_queue
        uploads are decoding or waiting to (QueueFullError, a 503, otherwise: bounded CPU and memory)."""
        with self._decode_count_lock:
            if self._decoding >= self.settings.decode_threads + self.settings.max_decode_queue:
                self.metrics.queue_rejected.inc()
                raise QueueFullError()
            self._decoding += 1
        try:
            work = self._decode_pool.submit(self._preprocess, data)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._decode_finished(None)
            raise BatcherClosedError() from None
        work.add_done_callback(self._decode_finished)  # counted until the thread is done, even if the caller left
        return await asyncio.wrap_future(work)

    def _decode_finished(self, _work: object) -> None:
        with self._decode_count_lock:
            self._decoding -= 1

    def _preprocess(self, data: bytes) -> torch.Tensor:
        assert self.engine is not None
        s = self.settings
        return self.engine.preprocess(decode_image(data, s.max_image_pixels, s.max_image_aspect_ratio))

    def _predict_batch(self, jobs: list[_Job]) -> list[Prediction]:
        assert self.engine is not None
        images = torch.stack([job.image for job in jobs])
        return self.engine.predict(images, [job.samples for job in jobs])

    def _observe_batch(self, stats: BatchStats) -> None:
        m = self.metrics
        m.batch_size.observe(stats.size)
        m.inference.observe(stats.seconds)
        for wait in stats.queue_waits:
            m.queue_wait.observe(wait)

    def _observe_prediction(self, p: Prediction, d: Decision) -> None:
        m = self.metrics
        m.samples.observe(p.samples)
        m.entropy.observe(p.entropy)
        m.mutual_information.observe(p.mutual_information)
        m.set_size.observe(len(d.prediction_set))
        m.calibrated.set(int(d.calibrated))
        m.unknown_threshold.labels(d.unknown_measure).set(d.unknown_threshold)
        if d.unknown:
            m.unknown.labels(d.unknown_measure).inc()

    # classes ----------------------------------------------------------------------------------

    def list_classes(self) -> list[str]:
        return list(self._require_engine().classnames)

    def _normalize_request(self, names: Sequence[str]) -> list[str]:
        engine = self._require_engine()
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

    async def add_classes(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Register names zero-shot; names already registered are left alone (idempotent)."""
        wanted = self._normalize_request(names)
        engine = self._require_engine()
        async with self._mutation_lock:
            current = {name_key(n) for n in engine.classnames}
            new = [n for n in wanted if name_key(n) not in current]
            if len(current) + len(new) > self.settings.max_classes:
                raise ClassLimitError(
                    f"registering {len(new)} more classes would exceed the limit of {self.settings.max_classes}; "
                    "delete some first"
                )
            if new:
                await self.batcher.run_exclusive(self._add_now, new)
            return {"added": new, "classes": list(engine.classnames)}

    def _add_now(self, names: list[str]) -> None:
        assert self.engine is not None
        added = self.engine.add_classes(names)
        try:
            self.registry.add(self.model_name, names)
        except Exception:
            for name in added:  # keep the engine as the registry says
                self.engine.remove_class(name)
            raise
        self._class_metrics()

    async def remove_class(self, name: str) -> dict[str, Any]:
        """Remove the class `name` names (any case or Unicode form of it); answers the name as registered."""
        engine = self._require_engine()
        try:
            normalized = normalize_name(name)
        except InvalidClassNameError as exc:
            raise InvalidRequestError(str(exc)) from None
        async with self._mutation_lock:
            registered = find(normalized, engine.classnames)
            if registered is None:
                raise ClassNotFoundError(normalized)
            await self.batcher.run_exclusive(self._remove_now, registered)
            return {"removed": registered, "classes": list(engine.classnames)}

    def _remove_now(self, name: str) -> None:
        assert self.engine is not None
        self.registry.remove(self.model_name, name)
        self.engine.remove_class(name)
        self._class_metrics()
