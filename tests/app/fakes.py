"""A dummy engine with the real engine's interface: fast, deterministic, records its batches."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import torch
from PIL import Image

from app.engine.errors import InvalidClassNameError, InvalidSamplesError, NoClassesError
from app.engine.results import ClassScore, Prediction
from app.names import normalize_name, show

MAX_NAME_CHARS = 40  # stands in for the text context


class FakeEngine:
    """Scores class c for an image by how close the image's mean colour is to hash(c)'s colour.

    Stochastic like vpt: sample m perturbs the logits by a fixed pseudo-random amount, so the
    answer depends on (image, samples) only, never on the batch it was computed in.
    """

    def __init__(self, variant: str = "vpt", max_samples: int = 20, delay_s: float = 0.0) -> None:
        self.variant = variant
        self.model_id = f"fake-{variant}"
        self.max_samples = max_samples
        self.calibration = None
        self.calibrated = False  # never calibrated: no calibration
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.encoded: list[str] = []  # names whose "text features" were computed
        self.warmed = False
        self._classes: list[str] = []
        self.preprocess_threads: set[str] = set()
        self.predict_threads: set[str] = set()

    @property
    def classnames(self) -> list[str]:
        return list(self._classes)

    def normalize_name(self, name: str) -> str:
        norm = normalize_name(name)  # the real engine delegates the same way
        if len(norm) > MAX_NAME_CHARS:
            raise InvalidClassNameError(f"class name {show(norm)} is too long")
        return norm

    def set_classes(self, names: list[str]) -> None:
        self._classes = list(dict.fromkeys(self.normalize_name(n) for n in names))
        self.encoded.extend(self._classes)

    def add_classes(self, names: list[str]) -> list[str]:
        new = [n for n in dict.fromkeys(self.normalize_name(n) for n in names) if n not in self._classes]
        self._classes.extend(new)
        self.encoded.extend(new)
        return new

    def remove_class(self, name: str) -> bool:
        name = self.normalize_name(name)
        if name in self._classes:
            self._classes.remove(name)
            return True
        return False

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        self.preprocess_threads.add(threading.current_thread().name)
        pixels = np.asarray(image.resize((8, 8)), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).permute(2, 0, 1)

    def warmup(self) -> None:
        self.warmed = True

    @staticmethod
    def _colour(name: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(sum(ord(ch) * 31**i for i, ch in enumerate(name)) % (2**31))
        return torch.rand(3, generator=g)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The "backbone pass": each image's mean colour [B, 3] (the delay stands for its cost)."""
        self.predict_threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batch_sizes.append(len(images))
        return images.mean(dim=(2, 3))

    def predict(self, images: torch.Tensor, samples: list[int]) -> list[Prediction]:
        return self.predict_features(self.encode(images), samples)

    def predict_features(self, feats: torch.Tensor, samples: list[int]) -> list[Prediction]:
        if not self._classes:
            raise NoClassesError("no classes")
        if len(samples) != len(feats) or any(not 1 <= s <= self.max_samples for s in samples):
            raise InvalidSamplesError("bad samples")
        colours = torch.stack([self._colour(c) for c in self._classes])  # [C, 3]
        out = []
        for mean, m in zip(feats, samples):
            logits = -10.0 * (colours - mean).pow(2).sum(-1)  # [C]
            stochastic = self.variant in ("vpt", "vpt-cond")
            noise = torch.randn(m, len(colours), generator=torch.Generator().manual_seed(0)) if stochastic else 0.0
            probs = torch.softmax(logits[None] + noise, dim=-1)  # [m, C]; m = 1 when deterministic
            if not stochastic:
                m = 1
            mean_p = probs.mean(0)
            var = probs.var(0, unbiased=False)
            entropy = float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum())
            expected = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
            order = torch.argsort(mean_p, descending=True)
            out.append(
                Prediction(
                    [
                        ClassScore(self._classes[i], float(mean_p[i]), float(var[i]), math.sqrt(float(var[i])))
                        for i in order.tolist()
                    ],
                    entropy,
                    expected,
                    max(entropy - expected, 0.0),
                    float(-torch.logsumexp(logits[None] + noise, dim=-1).mean()),
                    m,
                )
            )
        return out
