"""The serving engine: backbone + posterior -> Monte Carlo predictions with uncertainty (DESIGN 2).

One `Engine` per process. `predict` runs on the batcher's worker thread while class changes may
come from another: every change builds a new immutable ClassSet and swaps it in under a lock,
so a prediction always scores against one consistent class set, and changes never overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from app import names as class_names
from app.engine.bank import ClassCache, ClassSet, draw_noise
from app.engine.cond import per_image_logits
from app.engine.errors import InvalidClassNameError, InvalidSamplesError, NoClassesError
from app.engine.linear import Linearisation, expansion_points, guard_error, linear_logits, linearise, probe_features
from app.engine.results import ClassScore, Prediction
from training.artifact import load_posterior
from training.backbone import Backbone, autocast, load_backbone
from training.calibration import Calibration, is_calibrated_for
from training.learners import LearnerConfig, PromptLearner, build_learner
from training.text_passes import TextPasses, length_groups
from training.text_tower import ClassTokens, PromptError, TextTower, prompt_text
from training.uncertainty import summarize

log = logging.getLogger(__name__)

COND_MODES = ("exact", "linear")
LINEAR_PROBES = 4  # probe image features the guard compares the two passes on
AUTO = "auto"  # a sample count: draw blocks of AUTO_BLOCK until the answer settles (stochastic variants)
AUTO_BLOCK = 4


def top_class_error(logits: torch.Tensor) -> float:
    """Monte Carlo standard error of the top class's mean probability from per-sample logits [m, C] (inf if m < 2)."""
    if logits.shape[0] < 2:
        return float("inf")
    p = torch.softmax(logits.float(), dim=-1)
    top = p[:, p.mean(dim=0).argmax()]
    return (top.std() / logits.shape[0] ** 0.5).item()


def describe_model(variant: str, backbone: Backbone, posterior: str | Path | None) -> str:
    """A human-readable identity such as 'vpt-cond posterior.safetensors on tiny-clip (none)'."""
    ident = backbone.identity
    weights = ident.weights
    if weights.startswith("sha256:"):
        weights = weights[: len("sha256:") + 12]
    source = f" {Path(posterior).name}" if posterior else ""
    return f"{variant}{source} on {ident.model} ({weights})"


class Engine:
    def __init__(
        self,
        backbone: Backbone,
        learner: PromptLearner | None,
        *,
        max_samples: int = 20,
        seed: int = 0,
        chunk: int = 4096,
        model_id: str | None = None,
        text_mode: str | None = None,
        calibration: Calibration | None = None,
        cond_mode: str = "exact",
        linear_tolerance: float = 1e-3,
        auto_tolerance: float = 5e-3,
        probes: torch.Tensor | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        if cond_mode not in COND_MODES:
            raise ValueError(f"unknown cond_mode {cond_mode!r}; choose one of {', '.join(COND_MODES)}")
        ident = backbone.identity
        if learner is None:
            learner = build_learner(LearnerConfig("zeroshot"), ident.text_width, ident.embed_dim)
        self.backbone = backbone
        self.learner = learner.to(backbone.device)  # used under inference_mode only
        self.cfg = learner.cfg
        self.variant = self.cfg.variant
        self.max_samples = max_samples
        self.seed = seed
        self.model_id = model_id or describe_model(self.variant, backbone, None)
        self.trained_classnames: list[str] = []
        self.device = backbone.device
        self.tower = TextTower(backbone.model, backbone.tokenizer)
        self.passes = TextPasses(self.tower, chunk, text_mode)
        # Temperature (applied to every class), conformal scores and unknown threshold; the guarantees
        # hold while the registered classes are the calibrated ones (Prediction.calibrated).
        self.calibration = calibration
        self.scorer = backbone.scorer(calibration.temperature if calibration else 1.0)
        self._calibrated = False  # the registered classes are the calibrated ones
        # The noise bank: drawn once, so answers are reproducible and batch-independent.
        self.noise = draw_noise(max_samples, ident.text_width, seed, self.device) if self.cfg.stochastic else None
        self.cache = ClassCache(self.passes, None if self.cfg.per_image else self._shared_contexts())
        # vpt-cond's linearised pass (app/engine/linear.py): requested by cond_mode "linear", used
        # only while its measured error on the probes stays within linear_tolerance.
        self.cond_mode = cond_mode if self.variant == "vpt-cond" else "exact"
        self.linear_tolerance = linear_tolerance
        self.auto_tolerance = auto_tolerance  # samples=AUTO stops at this standard error of the top probability
        # the linear pass is expanded and guarded on image features: held-out ones stored in the artifact (the
        # error where it matters), else seeded random unit vectors (which understated it ~7x on a trained posterior)
        self._probes = (
            probes.to(self.device)
            if probes is not None
            else probe_features(LINEAR_PROBES, ident.embed_dim, seed, self.device)
        )
        self._classes = ClassSet()
        self._swap_lock = threading.Lock()  # guards reading / replacing the class set
        self._change_lock = threading.Lock()  # serialises class changes (encoding runs outside _swap_lock)

    @classmethod
    def load(
        cls,
        backbone: str,
        weights: str,
        posterior: str | Path | None,
        device: str,
        *,
        cache_dir: str | None = None,
        **options: object,
    ) -> Engine:
        """Backbone from a model name or JSON config; posterior artifact, or None for zero-shot CLIP."""
        return cls.from_posterior(load_backbone(backbone, weights, device, cache_dir), posterior, **options)

    @classmethod
    def from_posterior(cls, backbone: Backbone, posterior: str | Path | None, **options: object) -> Engine:
        """An engine over an already loaded backbone (several posteriors share one: app/models.py).
        `options` are the constructor's keywords (max_samples, seed, cond_mode, linear_tolerance)."""
        learner, trained, calibration, probes = None, [], None, None
        if posterior is not None:
            post = load_posterior(posterior, backbone)
            learner, trained, calibration, probes = post.learner, post.classnames, post.calibration, post.probes
        variant = learner.cfg.variant if learner is not None else "zeroshot"
        engine = cls(
            backbone,
            learner,
            model_id=describe_model(variant, backbone, posterior),
            calibration=calibration,
            probes=probes,
            **options,  # type: ignore[arg-type]
        )
        engine.trained_classnames = list(trained)
        log.info("engine %s, max %d samples", engine.model_id, engine.max_samples)
        return engine

    # -- classes --------------------------------------------------------------------------
    @property
    def classnames(self) -> list[str]:
        with self._swap_lock:
            return list(self._classes.names)

    def normalize_name(self, name: str) -> str:
        """app.names' display form (its rules for every name); refuse names whose prompt overflows the text context."""
        text = class_names.normalize_name(name)
        context = self.tower.context_length
        too_long = InvalidClassNameError(
            f"class name {class_names.show(text)} is too long: its prompt must fit the text context of {context} tokens"
        )
        if len(text) > 64 * context:  # cannot fit whatever the tokens; spare the tokenizer
            raise too_long
        try:
            self.tower.tokenize([prompt_text(text, self.cfg.prompt_ctx, self.cfg.template)])
        except PromptError as exc:
            raise too_long from exc
        return text

    @torch.inference_mode()
    def set_classes(self, names: list[str]) -> None:
        """Replace the class set (names normalised, duplicates dropped; one bad name changes nothing)."""
        valid = self._valid_unique(names)
        with self._change_lock, autocast(self.device):
            new = self.cache.build(self._tokens(valid)) if valid else ClassSet()
            self._swap(self._linearised(new, self._classes))

    @torch.inference_mode()
    def add_classes(self, names: list[str]) -> list[str]:
        """Register names not yet known (encoding only those); returns the ones newly added."""
        valid = self._valid_unique(names)
        with self._change_lock:
            current = self._classes
            fresh = [n for n in valid if current.index(n) is None]
            if fresh:
                with autocast(self.device):
                    new = self.cache.add(current, self._tokens(fresh))
                self._swap(self._linearised(new, current))
        return fresh

    @torch.inference_mode()
    def remove_class(self, name: str) -> bool:
        """Drop one class (whitespace-normalised name); False when it was not registered."""
        text = " ".join(name.split()) if isinstance(name, str) else ""
        with self._change_lock:
            position = self._classes.index(text)
            if position is None:
                return False
            self._swap(self._linearised(self.cache.remove(self._classes, position), self._classes))
        return True

    # -- prediction -----------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> [3, H, W] on the CPU (stateless, safe to call from a thread pool)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.backbone.preprocess(image)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features [B, D]: the backbone pass, shared by every engine on this backbone (app/service.py)."""
        return self.backbone.encode_images(images)

    def predict(self, images: torch.Tensor, samples: list[int | str]) -> list[Prediction]:
        """One batched forward; samples[i] (1..max_samples, or AUTO) prompts are averaged for image i."""
        if images.ndim != 4:
            raise InvalidSamplesError(f"need images [B, 3, H, W]; got {tuple(images.shape)}")
        return self.predict_features(self.encode(images), samples)

    def predict_features(self, feats: torch.Tensor, samples: list[int | str]) -> list[Prediction]:
        """predict() from image features [B, D] that encode() (of any engine on this backbone) computed."""
        if feats.ndim != 2 or len(feats) != len(samples):
            raise InvalidSamplesError(
                f"need image features [B, D] and one sample count per image; got {tuple(feats.shape)} "
                f"and {len(samples)} counts"
            )
        bad = [m for m in samples if m != AUTO and (not isinstance(m, int) or not 1 <= m <= self.max_samples)]
        if bad:
            raise InvalidSamplesError(f"samples must be in 1..{self.max_samples} or {AUTO!r}; got {bad[0]!r}")
        with self._swap_lock:
            classes, calibrated = self._classes, self._calibrated
        if not len(classes):
            raise NoClassesError("no classes are registered")
        return self._predict(classes, feats, samples, calibrated)

    @torch.inference_mode()
    def warmup(self) -> None:
        """One full prediction on a blank image, against the registered classes or a stand-in."""
        start = time.perf_counter()
        with self._swap_lock:
            classes = self._classes
        if not len(classes):
            with autocast(self.device):
                classes = self.cache.build(self._tokens(["warm-up"]))
        blank = self.preprocess(Image.new("RGB", (224, 224), (128, 128, 128)))[None]
        self._predict(classes, self.encode(blank), [self.max_samples], False)
        log.info("warm-up done in %.2f s", time.perf_counter() - start)

    @torch.inference_mode()
    def _predict(
        self, classes: ClassSet, feats: torch.Tensor, samples: list[int | str], calibrated: bool
    ) -> list[Prediction]:
        if not self.cfg.stochastic:
            return self._summaries(classes.names, self._logits(classes, feats, [1] * len(samples)), calibrated)
        logits: list[torch.Tensor | None] = [None] * len(samples)
        for want_auto, run in ((False, self._logits), (True, self._adaptive_logits)):
            idx = [i for i, m in enumerate(samples) if (m == AUTO) == want_auto]
            if idx:
                rows = torch.tensor(idx, device=feats.device)
                for i, lg in zip(idx, run(classes, feats[rows], [samples[i] for i in idx])):
                    logits[i] = lg
        return self._summaries(classes.names, logits, calibrated)

    def _logits(self, classes: ClassSet, feats: torch.Tensor, used: list[int], offset: int = 0) -> list[torch.Tensor]:
        """Logits [m_i, C] per image from bank rows offset .. offset + m_i - 1."""
        noise = None if self.noise is None else self.noise[offset:]
        if classes.linear_active:  # no text pass: the linearised features, one matmul per chunk
            return linear_logits(classes.linear.from_sample(offset), self.learner, feats, used, noise, self.scorer)
        if self.cfg.per_image:
            with autocast(self.device):  # text passes in bf16 on CUDA; similarities are reduced in fp32
                return per_image_logits(self.passes, self.learner, classes, feats, used, noise, self.scorer)
        # one fp32 matmul against max(m) bank entries: [B, D] x [D, m * C]
        every = self.scorer.shared(feats, classes.text_t[:, offset : offset + max(used)])  # a view, rows m * C apart
        return [every[i, :m] for i, m in enumerate(used)]

    def _adaptive_logits(self, classes: ClassSet, feats: torch.Tensor, _: list) -> list[torch.Tensor]:
        """samples=AUTO: blocks of AUTO_BLOCK bank rows until the top class's Monte Carlo standard error
        is within auto_tolerance (or max_samples). An answer that used m samples is the fixed-m answer."""
        parts: list[list[torch.Tensor]] = [[] for _ in range(len(feats))]
        active, done = list(range(len(feats))), 0
        while active:
            k = min(AUTO_BLOCK, self.max_samples - done)
            rows = torch.tensor(active, device=feats.device)
            new = self._logits(classes, feats[rows], [k] * len(active), offset=done)
            done += k
            for i, lg in zip(active, new):
                parts[i].append(lg)
            if done >= self.max_samples:
                break
            active = [i for i in active if top_class_error(torch.cat(parts[i])) > self.auto_tolerance]
        return [torch.cat(p) for p in parts]

    @staticmethod
    def _summaries(names: tuple[str, ...], logits: list[torch.Tensor], calibrated: bool) -> list[Prediction]:
        """Per image: MC mean / variance per class and the entropies (images with equal m together)."""
        out: list[Prediction | None] = [None] * len(logits)
        by_m: dict[int, list[int]] = {}
        for i, lg in enumerate(logits):
            by_m.setdefault(lg.shape[0], []).append(i)
        for m, idx in by_m.items():
            pred = summarize(torch.stack([logits[i] for i in idx]).float())
            order = torch.sort(pred.probs, dim=-1, descending=True, stable=True).indices
            probs = pred.probs.gather(1, order).cpu().tolist()
            var = pred.variance.gather(1, order).cpu()
            std = var.sqrt().tolist()
            var = var.tolist()
            order = order.cpu().tolist()
            h, eh, mi, en = (
                t.cpu().tolist() for t in (pred.entropy, pred.expected_entropy, pred.mutual_information, pred.energy)
            )
            for j, i in enumerate(idx):
                labels = map(names.__getitem__, order[j])
                scores = list(map(ClassScore, labels, probs[j], var[j], std[j]))
                out[i] = Prediction(scores, h[j], eh[j], mi[j], en[j], m, calibrated)
        return out  # type: ignore[return-value]

    @property
    def calibrated(self) -> bool:
        """Whether the registered classes are the ones the calibration was fitted on (kept by _swap)."""
        with self._swap_lock:
            return self._calibrated

    # -- the linearised conditional pass --------------------------------------------------
    @property
    def linear_error(self) -> float | None:
        """The guard's last measured max |dp| of the linear pass against the exact one (None: not measured)."""
        with self._swap_lock:
            return self._classes.linear_error

    @property
    def active_cond_mode(self) -> str:
        """The text pass predictions use now: "linear" only when requested and within tolerance."""
        with self._swap_lock:
            return "linear" if self._classes.linear_active else "exact"

    def _linearised(self, new: ClassSet, old: ClassSet) -> ClassSet:
        """new with its linearisation (reusing old's classes; encoding only new ones) and the guard's verdict."""
        if self.cond_mode != "linear" or not len(new):
            return new
        ctx = self.learner.ctx.float()
        r0 = old.linear.r0 if old.linear is not None else expansion_points(self.learner, self._probes, self.noise)
        have = {name: i for i, name in enumerate(old.names)} if old.linear is not None else {}
        missing = [i for i, name in enumerate(new.names) if name not in have]
        parts, order = [], []
        if len(have) and len(missing) < len(new):
            kept = [have[n] for n in new.names if n in have]
            parts.append(old.linear.select(kept))
            order += [i for i, n in enumerate(new.names) if n in have]
        if missing:
            tokens = new.tokens.select(missing)
            parts.append(linearise(self.passes, ctx, r0, length_groups(tokens), len(missing)))
            order += missing
        lin = Linearisation.cat(parts) if len(parts) > 1 else parts[0]
        if order != list(range(len(new))):
            lin = lin.select(sorted(range(len(order)), key=order.__getitem__))
        with autocast(self.device):
            exact = per_image_logits(
                self.passes, self.learner, new, self._probes, [self.max_samples] * len(self._probes), self.noise,
                self.scorer,
            )  # fmt: skip
        error = guard_error(lin, self.learner, self._probes, self.noise, self.scorer, exact)
        active = error <= self.linear_tolerance
        log.info(
            "linear vpt-cond pass for %d classes: max |dp| %.1e on %d probes (tolerance %.0e): %s, %.1f MB",
            len(new), error, len(self._probes), self.linear_tolerance, "linear" if active else "exact",
            lin.nbytes / 2**20,
        )  # fmt: skip
        return dataclasses.replace(new, linear=lin, linear_error=error, linear_active=active)

    # -- helpers --------------------------------------------------------------------------
    def _valid_unique(self, names: list[str]) -> list[str]:
        """Every name normalised (all-or-nothing: one bad name changes nothing), first occurrence kept."""
        seen: dict[str, None] = {}
        for name in names:
            seen.setdefault(self.normalize_name(name), None)
        return list(seen)

    def _tokens(self, names: list[str]) -> ClassTokens:
        return self.tower.class_tokens(names, self.cfg.prompt_ctx, self.cfg.template)

    def _swap(self, classes: ClassSet) -> None:
        """Replace the class set and, with it, whether the calibration's guarantees hold (one atomic step)."""
        calibrated = is_calibrated_for(self.calibration, list(classes.names))
        with self._swap_lock:
            self._classes, self._calibrated = classes, calibrated

    @torch.inference_mode()
    def _shared_contexts(self) -> torch.Tensor:
        """Context rows of the image-independent prompts: [M, n_ctx, W] (M = max_samples for vpt, else 1)."""
        anchor = torch.zeros(1, self.backbone.identity.embed_dim, device=self.device)
        eps = None if self.noise is None else self.noise[None]
        return self.learner.contexts(anchor, eps)[0]
