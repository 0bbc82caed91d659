"""What an engine returns and the interface the service relies on: no torch in the results, no HTTP.

The real engine (app/engine/engine.py) and the test fake (tests/app/fakes.py) both implement
`EngineProtocol` and return these types, so the service cannot come to depend on something only
one of them has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from training.calibration import Calibration


@dataclass(slots=True)
class ClassScore:
    label: str
    probability: float  # MC mean of the per-sample softmax
    variance: float  # Var_m p_m(c), the MC predictive variance
    std: float


@dataclass
class Prediction:
    classes: list[ClassScore]  # every registered class, most probable first
    entropy: float
    expected_entropy: float
    mutual_information: float
    energy: float  # E_m[-logsumexp_c logits_m] on calibrated logits
    samples: int  # prompts averaged (1 for the deterministic variants)
    calibrated: bool = False  # scored at the calibrated temperature (the registered classes are the calibrated ones)


@runtime_checkable
class EngineProtocol(Protocol):
    variant: str
    model_id: str
    max_samples: int
    calibration: Calibration | None

    @property
    def classnames(self) -> list[str]: ...

    @property
    def calibrated(self) -> bool: ...

    def normalize_name(self, name: str) -> str: ...

    def set_classes(self, names: list[str]) -> None: ...

    def add_classes(self, names: list[str]) -> list[str]: ...

    def remove_class(self, name: str) -> bool: ...

    def preprocess(self, image: Any) -> Any: ...

    def encode(self, images: Any) -> Any: ...

    def predict(self, images: Any, samples: list[int]) -> Sequence[Prediction]: ...

    def predict_features(self, feats: Any, samples: list[int | str]) -> Sequence[Prediction]: ...

    def warmup(self) -> None: ...
