"""Request and response bodies (they also document the API in /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CalibrationOut(BaseModel):
    temperature: float = Field(description="T dividing every sample's logits (fitted on held-out images)")
    method: str = Field(description="conformal score: aps (adaptive) or lac")
    held_out_images: int = Field(description="labelled images the conformal scores and thresholds come from")
    classes: int = Field(description="size of the class set it was calibrated on")
    matches_registered_classes: bool = Field(description="false once classes were added or removed")
    false_alarm: float = Field(description="target share of known-class images flagged unknown")


class ModelOut(BaseModel):
    name: str = Field(description="the model's name (GET /models lists them)")
    version: str = Field(description="first 12 hex digits of the artifact's sha256: which version answered")
    variant: str = Field(description="zeroshot, coop, cocoop, vpt or vpt-cond")
    id: str = Field(description="which backbone + posterior answered")
    max_samples: int
    text_pass: str = Field(
        "exact",
        description="vpt-cond's text pass: exact, or linear (cond_mode linear and the guard passed)",
    )
    linear_error: float | None = Field(
        None, description="the guard's measured max |dp| of the linear pass against the exact one (null: not measured)"
    )
    calibration: CalibrationOut | None = Field(description="null: the posterior carries no calibration")
    unknown_measure: str = Field(description="the score the unknown flag thresholds")
    unknown_threshold: float = Field(description="answers with unknown_score above this are flagged unknown")


class ClassScoreOut(BaseModel):
    label: str
    probability: float = Field(description="Monte Carlo mean of p(class | image)")
    variance: float = Field(description="variance of p(class | image) over the sampled prompts")
    std: float


class ClassifyOut(BaseModel):
    classes: list[ClassScoreOut] = Field(description="sorted by probability, highest first")
    entropy: float = Field(description="predictive entropy H[mean p] (nats)")
    expected_entropy: float = Field(description="E_m H[p_m] (aleatoric part, nats)")
    mutual_information: float = Field(description="entropy - expected_entropy (epistemic part, nats)")
    energy: float = Field(description="mean over samples of -logsumexp of the logits (lower: closer to a class)")
    prediction_set: list[str] = Field(
        description="labels, most probable first, that hold the true class with probability >= coverage "
        "(guaranteed only when calibrated is true)"
    )
    coverage: float = Field(description="1 - alpha, the promised coverage of prediction_set")
    calibrated: bool = Field(
        description="true when the posterior was calibrated on exactly the registered classes: then the "
        "probabilities are temperature-calibrated and prediction_set carries its guarantee"
    )
    unknown: bool = Field(description="true when the image is likely of none of the registered classes")
    unknown_score: float = Field(description="the score behind `unknown` (higher: less like a known class)")
    unknown_measure: str = Field(description="which score: entropy, max_probability (1 - max p), energy, ...")
    samples: int = Field(description="Monte Carlo samples used")
    model: ModelOut
    registry_version: int = Field(
        description="the class registry version whose classes this answer was scored against (the same on every "
        "replica for the same classes; it grows with every registered or removed class)"
    )


class ClassifyManyOut(BaseModel):
    answers: list[ClassifyOut] = Field(description="one answer per model asked, in the order asked")


class ModelInfoOut(BaseModel):
    name: str
    version: str = Field(description="first 12 hex digits of sha256 (of the artifact; zero-shot: of its identity)")
    variant: str
    sha256: str | None = Field(description="the artifact file's full sha256 (null: no artifact)")
    path: str | None = Field(description="the artifact file it was loaded from")
    created_at: str | None = Field(description="when the artifact was written (ISO 8601)")
    loaded_at: str = Field(description="when this version started serving (ISO 8601)")
    classes: int = Field(description="classes registered now")
    trained_classes: int = Field(description="classes the posterior was fitted on")
    calibrated: bool = Field(description="calibrated, on exactly the registered classes")
    calibration: CalibrationOut | None
    state: str = Field(description="ready")
    error: str | None = Field(description="why the last reload failed (this version keeps serving); null if none")


class ModelsOut(BaseModel):
    default: str = Field(description="the model answering requests that name none (and /classes)")
    models: list[ModelInfoOut]
    refused: list[str] = Field(description="artifacts of the repository that are not served, and why")


class ReloadOut(BaseModel):
    name: str
    version: str = Field(description="the version serving now")
    previous_version: str
    changed: bool = Field(description="false when the artifact's content was the serving version's")


class NamesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(
        min_length=1,
        description="class names to register, e.g. ['red star', 'blue circle'] (at most max_names_per_call)",
    )


class ClassesOut(BaseModel):
    classes: list[str]


class AddedOut(ClassesOut):
    added: list[str] = Field(description="names that were new (already registered ones are left alone)")


class RemovedOut(ClassesOut):
    removed: str


class ReadyOut(BaseModel):
    status: str
    model: ModelOut = Field(description="the default model")
    classes: int = Field(description="classes of the default model")
    models: int = Field(description="models served")
    registry_version: int | None = Field(None, description="the class registry version this replica serves")
    reason: str | None = Field(
        None, description='why the status is "degraded": the replica answers, but classes cannot change now'
    )


class ErrorOut(BaseModel):
    detail: str
