"""Request and response bodies (they also document the API in /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelOut(BaseModel):
    variant: str = Field(description="zeroshot, coop, cocoop, vpt or vpt-cond")
    id: str = Field(description="which backbone + posterior answered")
    max_samples: int


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
    samples: int = Field(description="Monte Carlo samples used")
    model: ModelOut


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
    model: ModelOut
    classes: int


class ErrorOut(BaseModel):
    detail: str
