"""Captions for pretraining scenes: varied templates, other attributes, deliberate gaps.

Clean images are named (colour and shape) in many word orders, mentioning size, position
and background too, so the text tower learns composition rather than one sentence. Infrared
images are mostly captioned generically; only a share names the class, always together with
the domain word. That is what makes "a photo of a {c}." wrong on infrared images while
"infrared" + class words still means something to the text tower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.shapes.world import Scene, WorldConfig

CLEAN_NAMED = [
    "a photo of a {c}.",
    "a {c}.",
    "{c}",
    "a photo of a {size}{c}.",
    "a {size}{c} on a {bg} background.",
    "a {c} on the {pos}.",
    "a picture of a {shape} that is {colour}.",
    "a {shape}, coloured {colour}.",
    "a drawing of a {size}{c} on the {pos}.",
    "a {colour} {shape} against a {bg} background.",
    "there is a {c} on the {pos}.",
    "a photo of the {shape} in {colour}.",
]
CLEAN_SHAPE_ONLY = ["a photo of a {size}{shape}.", "a {shape} on a {bg} background.", "a {shape} on the {pos}."]
CLEAN_COLOUR_ONLY = ["a photo of something {colour}.", "a {colour} thing on the {pos}.", "something {colour}."]

SHIFTED_NAMED = [
    "an infrared photo of a {c}.",
    "a {c} in infrared.",
    "an infrared photo of a {size}{c}.",
    "an infrared image of a {c} on the {pos}.",
    "a {shape} that is {colour}, in infrared.",
    "infrared: a {c}.",
]
SHIFTED_SHAPE_ONLY = [
    "an infrared photo of a {shape}.",
    "an infrared image of a {size}{shape} on the {pos}.",
    "a {shape} in infrared.",
]
SHIFTED_GENERIC = [
    "an infrared photo.",
    "an infrared photo of a shape.",
    "a grainy infrared image.",
    "infrared.",
    "an infrared picture of a {size}shape on the {pos}.",
    "an infrared image with a {bg} background.",
]


def _pick(rng: np.random.Generator, templates: list[str]) -> str:
    return templates[int(rng.integers(len(templates)))]


def caption_for(scene: Scene, cfg: WorldConfig, rng: np.random.Generator, shifted: bool) -> str:
    """One caption for `scene` (`shifted`: infrared style), with the world's share of unnamed captions."""
    if shifted:
        if rng.random() < cfg.named_shift_fraction:
            template = _pick(rng, SHIFTED_NAMED)
        elif rng.random() < cfg.shape_only_fraction:
            template = _pick(rng, SHIFTED_SHAPE_ONLY)
        else:
            template = _pick(rng, SHIFTED_GENERIC)
    else:
        u = rng.random()
        if u < cfg.omit_fraction / 2:
            template = _pick(rng, CLEAN_SHAPE_ONLY)
        elif u < cfg.omit_fraction:
            template = _pick(rng, CLEAN_COLOUR_ONLY)
        else:
            template = _pick(rng, CLEAN_NAMED)
    return template.format(
        c=scene.classname,
        colour=scene.colour,
        shape=scene.shape,
        size=f"{scene.size_word} " if scene.size_word else "",
        pos=scene.position_word,
        bg=scene.background_word,
    )
