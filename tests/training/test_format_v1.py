"""Artifacts written by format version 1 keep loading and keep scoring exactly as they did.

tests/assets/format-v1/ was written once by the v1 code (one artifact per variant on the tiny
seeded backbone) together with the logits that code produced for fixed image features and
noise. Any later change to the learner, the text passes or the logits formula that alters a
number fails here: this pins the method to stored outputs, not to itself.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ASSETS
from training.artifact import load_posterior
from training.classifier import PromptClassifier

STORED = ASSETS / "format-v1"


@pytest.mark.parametrize("variant", ["zeroshot", "coop", "cocoop", "vpt", "vpt-cond"])
def test_v1_artifact_loads_and_reproduces_its_logits(tiny_backbone, variant):
    ref = load_file(str(STORED / "reference.safetensors"))
    post = load_posterior(STORED / f"{variant}.safetensors", tiny_backbone)
    assert post.metadata["format_version"] == "1"
    assert post.learner.cfg.variant == variant
    clf = PromptClassifier(tiny_backbone, post.learner, post.classnames).eval()
    with torch.no_grad():
        logits = clf(ref["image_features"], ref.get(f"{variant}.eps")).logits
    torch.testing.assert_close(logits, ref[f"{variant}.logits"], atol=1e-5, rtol=1e-5)
