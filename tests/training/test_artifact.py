import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training.artifact import ArtifactError, load_posterior, read_metadata, save_posterior
from training.backbone import Backbone
from training.classifier import PromptClassifier
from training.learners import LearnerConfig

NAMES = ["red", "green", "blue"]


@pytest.mark.parametrize("variant", ["coop", "cocoop", "vpt", "vpt-cond"])
def test_round_trip_preserves_predictions_and_metadata(tmp_path, tiny_backbone, variant):
    torch.manual_seed(1)
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig(variant, log_var_init=-3.0), NAMES)
    with torch.no_grad():
        for p in clf.learner.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_posterior(
        tmp_path / "p.safetensors",
        clf.learner,
        tiny_backbone.identity,
        NAMES,
        {"beta": 0.001, "estimator": "elbo", "samples": 4, "seed": 1},
        {"train": {"accuracy": 1.0}},
    )
    post = load_posterior(path, tiny_backbone)
    assert post.classnames == NAMES
    assert post.metadata["variant"] == variant
    assert post.metadata["training"]["estimator"] == "elbo"
    assert post.metadata["learner"]["n_ctx"] == 4
    with safe_open(str(path), "pt") as fh:
        header = fh.metadata()
    for key in ("format_version", "backbone", "weights", "text_width", "learner", "classnames", "created_at"):
        assert key in header
    again = PromptClassifier(tiny_backbone, post.learner, NAMES)
    f = torch.nn.functional.normalize(torch.randn(2, tiny_backbone.identity.embed_dim), dim=-1)
    eps = clf.learner.sample_noise(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(again(f, eps).logits, clf(f, eps).logits)


def test_mismatched_backbone_is_refused_naming_the_field(tmp_path, tiny_backbone):
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("coop"), NAMES)
    path = save_posterior(tmp_path / "p.safetensors", clf.learner, tiny_backbone.identity, NAMES, {}, {})
    other = dataclasses.replace(
        tiny_backbone, identity=dataclasses.replace(tiny_backbone.identity, weights="sha256:abc")
    )
    with pytest.raises(ArtifactError, match="weights="):
        load_posterior(path, other)
    wider = dataclasses.replace(tiny_backbone, identity=dataclasses.replace(tiny_backbone.identity, text_width=512))
    with pytest.raises(ArtifactError, match="text_width"):
        load_posterior(path, wider)
    assert isinstance(other, Backbone)


def test_unreadable_and_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="junk.safetensors"):
        read_metadata(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign), metadata={"hello": json.dumps(1)})
    with pytest.raises(ArtifactError, match="format_version"):
        read_metadata(foreign)
    with pytest.raises(ArtifactError, match="not found"):
        read_metadata(tmp_path / "missing.safetensors")


def test_random_weights_are_reproducible_across_loads():
    from tests.conftest import TINY_CONFIG
    from training.backbone import load_backbone

    a = load_backbone(str(TINY_CONFIG), "none").model.state_dict()
    torch.manual_seed(123)  # global RNG state must not matter
    b = load_backbone(str(TINY_CONFIG), "none").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_probe_features_round_trip_and_reach_the_engine(tmp_path, tiny_backbone):
    from app.engine.engine import Engine

    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt-cond"), NAMES)
    dim = tiny_backbone.identity.embed_dim
    probes = torch.nn.functional.normalize(torch.randn(3, dim), dim=-1)
    path = save_posterior(tmp_path / "p.safetensors", clf.learner, tiny_backbone.identity, NAMES, {}, {}, None, probes)
    post = load_posterior(path, tiny_backbone)
    torch.testing.assert_close(post.probes, probes)
    engine = Engine.from_posterior(tiny_backbone, path, max_samples=2, cond_mode="linear")
    engine.set_classes(NAMES)
    expected = Engine(tiny_backbone, post.learner, max_samples=2, cond_mode="linear", probes=probes)
    expected.set_classes(NAMES)
    assert engine.linear_error == expected.linear_error  # measured on the stored probes
    without = save_posterior(tmp_path / "q.safetensors", clf.learner, tiny_backbone.identity, NAMES, {}, {})
    assert load_posterior(without, tiny_backbone).probes is None
    bad = save_posterior(
        tmp_path / "r.safetensors", clf.learner, tiny_backbone.identity, NAMES, {}, {}, None, probes[:, :5]
    )
    with pytest.raises(ArtifactError, match="probe_features"):
        load_posterior(bad, tiny_backbone)
