"""Temperature, split-conformal sets and the unknown threshold on synthetic data with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from training.artifact import load_posterior, save_posterior
from training.calibration import (
    Calibration,
    calibrate_logits,
    conformal_scores,
    conformal_threshold,
    false_alarm_threshold,
    fit_temperature,
    prediction_sets,
)
from training.classifier import PromptClassifier
from training.learners import LearnerConfig


def _sampled_labels(logits: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=g).squeeze(1)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_the_one_that_generated_the_labels(true_t):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 1, 10, generator=g)
    labels = _sampled_labels(logits[:, 0], true_t, 1)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def _exchangeable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated-by-construction probabilities over 20 classes, labels drawn from them."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(n, 20, generator=g), dim=-1)
    return probs, torch.multinomial(probs, 1, generator=g).squeeze(1)


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_split_conformal_coverage_is_within_sampling_error(method):
    alpha, n_cal, n_test, seeds = 0.1, 500, 2000, 40
    coverages = []
    for seed in range(seeds):
        cal_p, cal_y = _exchangeable(n_cal, 2 * seed)
        test_p, test_y = _exchangeable(n_test, 2 * seed + 1)
        q = conformal_threshold(conformal_scores(cal_p, cal_y, method).sort().values.tolist(), alpha)
        member = prediction_sets(test_p, q, method)
        coverages.append(float(member.gather(1, test_y[:, None]).float().mean()))
    mean = sum(coverages) / seeds
    # marginal coverage lies in [1 - alpha, 1 - alpha + 1 / (n + 1)] (lac); the deterministic aps rule may add
    # a little; the spread of the mean over 40 runs is ~0.002.
    upper = 1 - alpha + 1 / (n_cal + 1) + (0.01 if method == "lac" else 0.04)
    assert 1 - alpha - 0.01 <= mean <= upper, (method, mean)
    assert min(coverages) > 1 - alpha - 0.05


def test_threshold_is_the_right_order_statistic_and_inf_when_too_few():
    scores = [i / 10 for i in range(1, 10)]  # n = 9
    assert conformal_threshold(scores, 0.1) == pytest.approx(0.9)  # k = ceil(10 * 0.9) = 9: the largest
    assert conformal_threshold(scores, 0.2) == pytest.approx(0.8)  # k = ceil(10 * 0.8) = 8
    assert conformal_threshold(scores, 0.05) == math.inf  # k = 10 > 9: every class
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(scores, 1.0)


def test_sets_are_never_empty_and_grow_as_alpha_shrinks():
    probs, labels = _exchangeable(300, 7)
    for method in ("lac", "aps"):
        scores = conformal_scores(probs, labels, method).sort().values.tolist()
        sizes = [prediction_sets(probs, conformal_threshold(scores, a), method).sum(1) for a in (0.5, 0.2, 0.05)]
        assert all(bool((s >= 1).all()) for s in sizes)
        assert bool((sizes[0] <= sizes[1]).all() and (sizes[1] <= sizes[2]).all())


def test_false_alarm_threshold_flags_the_target_share():
    known = torch.rand(10000, generator=torch.Generator().manual_seed(3))
    limit = false_alarm_threshold(known, 0.05)
    assert float((known > limit).float().mean()) == pytest.approx(0.05, abs=0.005)


def test_artifact_round_trips_the_calibration(tmp_path, tiny_backbone):
    names = ["red", "green", "blue"]
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt", log_var_init=-2.0), names)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 4, 3, generator=g) * 3
    cal = calibrate_logits(logits, torch.randint(0, 3, (60,), generator=g), names, method="aps")
    path = save_posterior(tmp_path / "p.safetensors", clf.learner, tiny_backbone.identity, names, {}, {}, cal)
    back = load_posterior(path, tiny_backbone).calibration
    assert isinstance(back, Calibration) and back == cal
    assert back.scores == sorted(back.scores) and len(back.scores) == 60 and back.samples == 4
    plain = save_posterior(tmp_path / "q.safetensors", clf.learner, tiny_backbone.identity, names, {}, {})
    assert load_posterior(plain, tiny_backbone).calibration is None
