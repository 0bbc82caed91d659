"""What the API says about a served model: in every answer and /readyz (answering_model), and in
GET /models (model_entry). Pure functions of the model as served now."""

from __future__ import annotations

from typing import Any

from app.decision import Fallback, unknown_rule
from app.models import ServedModel


def trained_classes(engine: Any) -> list[str]:
    """The classes the posterior was fitted on (none for zero-shot or an engine given in code)."""
    return list(getattr(engine, "trained_classnames", []))


def answering_model(model: ServedModel, fallback: Fallback) -> dict[str, Any]:
    """The `model` object of an answer: which version answered, and the rules its uncertainty follows."""
    engine = model.engine
    cal = engine.calibration
    measure, threshold = unknown_rule(cal, fallback)
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
        "name": model.name,
        "version": model.version,
        "variant": engine.variant,
        "id": str(engine.model_id),
        "max_samples": engine.max_samples,
        "text_pass": getattr(engine, "active_cond_mode", "exact"),
        "linear_error": getattr(engine, "linear_error", None),
        "calibration": calibration,
        "unknown_measure": measure,
        "unknown_threshold": threshold,
    }


def model_entry(model: ServedModel, fallback: Fallback) -> dict[str, Any]:
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
        "calibration": answering_model(model, fallback)["calibration"],
        "state": "ready",
        "error": model.error,
    }
