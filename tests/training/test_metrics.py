import math

import torch

from training.metrics import auroc, brier, ece, evaluate_predictive, nll
from training.uncertainty import summarize


def test_summary_of_identical_samples_has_no_epistemic_part():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]]).expand(2, 5, 3)
    pred = summarize(logits)
    assert torch.allclose(pred.variance, torch.zeros(2, 3), atol=1e-7)
    assert torch.allclose(pred.mutual_information, torch.zeros(2), atol=1e-6)
    assert torch.allclose(pred.entropy, pred.expected_entropy, atol=1e-6)


def test_disagreeing_samples_give_mutual_information_and_variance():
    # two confident samples that disagree: mean is uniform, each sample is near one-hot
    logits = torch.tensor([[[10.0, -10.0], [-10.0, 10.0]]])
    pred = summarize(logits)
    assert torch.allclose(pred.probs, torch.tensor([[0.5, 0.5]]), atol=1e-6)
    assert math.isclose(float(pred.entropy), math.log(2), rel_tol=1e-4)
    assert float(pred.mutual_information) > 0.69
    assert torch.allclose(pred.variance, torch.tensor([[0.25, 0.25]]), atol=1e-5)


def test_metric_values_on_a_hand_example():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1])
    assert math.isclose(nll(probs, labels), -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3, rel_tol=1e-5)
    assert math.isclose(brier(probs, labels), (0.02 + 0.08 + 0.72) / 3, rel_tol=1e-5)
    # bins: 0.9 (right), 0.8 (right), 0.6 (wrong) -> |0.9-1|+|0.8-1|+|0.6-0| over 3
    assert math.isclose(ece(probs, labels), (0.1 + 0.2 + 0.6) / 3, rel_tol=1e-5)


def test_auroc_perfect_inverted_and_ties():
    scores = torch.tensor([0.1, 0.2, 0.8, 0.9])
    assert auroc(scores, torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(scores, torch.tensor([1, 1, 0, 0])) == 0.0
    assert auroc(torch.ones(4), torch.tensor([0, 1, 0, 1])) == 0.5
    assert math.isnan(auroc(scores, torch.zeros(4)))


def test_evaluate_predictive_reports_every_figure():
    pred = summarize(torch.randn(6, 4, 3))
    figures = evaluate_predictive(pred, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert set(figures) == {"n", "accuracy", "nll", "brier", "ece", "auroc_entropy", "auroc_mutual_information"}
    assert 0.0 <= figures["accuracy"] <= 1.0
