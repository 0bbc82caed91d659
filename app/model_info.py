"""What the API says about a served model: in every answer and /readyz (answering_model), and in
GET /models (model_entry). Pure functions of the model as served now."""

from __future__ import annotations

from typing import Any

from app.decision import Fallback, unknown_rule
from app.models import ServedModel


def trained_classes(engine: Any) -> list[str]:
    """The classes the posterior was fitted on (none for zero-shot or an engine given in code)."""
    return list(getattr(engine, "trained_classnames", []))


def calibration_state(engine: Any) -> dict[str, Any] | None:
    """The posterior's calibration and whether it holds for the registered classes (None: uncalibrated)."""
    cal = engine.calibration
    if cal is None:
        return None
    return {
        "temperature": cal.temperature,
        "method": cal.method,
        "held_out_images": len(cal.scores),
        "classes": len(cal.classnames),
        "matches_registered_classes": engine.calibrated,
        "false_alarm": cal.false_alarm,
    }


def answering_model(model: ServedModel, fallback: Fallback) -> dict[str, Any]:
    """The `model` object of an answer: which version answered, and the rules its uncertainty follows."""
    engine = model.engine
    measure, threshold = unknown_rule(engine.calibration, fallback)
    return {
        "name": model.name,
        "version": model.version,
        "variant": engine.variant,
        "id": str(engine.model_id),
        "max_samples": engine.max_samples,
        "text_pass": getattr(engine, "active_cond_mode", "exact"),
        "linear_error": getattr(engine, "linear_error", None),
        "calibration": calibration_state(engine),
        "unknown_measure": measure,
        "unknown_threshold": threshold,
    }


def model_entry(model: ServedModel) -> dict[str, Any]:
    """A model in GET /models: its file, version, classes and calibration state, and a failed reload's error."""
    engine = model.engine
    return {
        "name": model.name,
        "version": model.version,
        "variant": engine.variant,
        "sha256": model.sha256,
        "path": str(model.path) if model.path is not None else None,
        "created_at": model.created_at,
        "loaded_at": model.loaded_at,
        "classes": len(engine.classnames),
        "trained_classes": len(trained_classes(engine)),
        "calibrated": engine.calibrated,
        "calibration": calibration_state(engine),
        "state": "ready",
        "error": model.error,
    }
