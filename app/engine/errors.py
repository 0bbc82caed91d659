"""Domain errors of the serving engine; the API maps them to HTTP answers."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of everything the engine refuses to do."""


class NoClassesError(EngineError):
    """A prediction was asked for while no class is registered."""


class InvalidClassNameError(EngineError):
    """A class name is empty or does not fit the text context; the message says which and why."""


class InvalidSamplesError(EngineError, ValueError):
    """A prediction asked for a sample count outside 1..max_samples, or images and counts disagree."""
