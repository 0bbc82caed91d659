"""The base-to-new benchmark on a generated folder: every metric for every method."""

import json
import math

from tests.conftest import TINY_CONFIG
from training import cli_eval
from training.base2new import harmonic_mean
from training.learners import VARIANTS
from training.report import GENERATED_END, GENERATED_START, splice_generated


def test_base2new_reports_every_metric_for_every_method(tmp_path, image_folder, capsys):
    out = tmp_path / "b2n"
    code = cli_eval.main(
        [
            "base2new",
            "--data",
            str(image_folder),
            "--backbone",
            str(TINY_CONFIG),
            "--weights",
            "none",
            "--quick",
            "--shots",
            "3",
            "--epochs",
            "1",
            "--samples",
            "2",
            "--eval-samples",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "base2new.json").read_text())
    assert {r["method"] for r in result["runs"]} == set(VARIANTS)
    for row in result["runs"]:
        for split in ("base", "new"):
            for metric in ("accuracy", "ece", "nll", "brier", "auroc_entropy", "auroc_mutual_information"):
                assert f"{split}_{metric}" in row
        assert math.isclose(row["hm_accuracy"], harmonic_mean(row["base_accuracy"], row["new_accuracy"]))
    table = (out / "base2new.md").read_text()
    assert all(f"| {m} |" in table for m in VARIANTS)
    assert "base2new --data" in table  # the exact command is recorded
    for png in ("accuracy.png", "reliability.png", "coverage.png", "roc.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    calibrated = [r for r in result["runs"] if "temperature" in r and "base_set_coverage" in r]
    assert {r["method"] for r in calibrated} == set(VARIANTS)  # every method is calibrated on held-out images
    for row in calibrated:
        assert 0 <= row["base_set_coverage"] <= 1 and row["base_set_size"] >= 1
        for score in ("max_probability", "entropy", "mutual_information", "energy", "set_size"):
            assert 0 <= row[f"auroc_unknown_{score}"] <= 1
    page = (out / "uncertainty.md").read_text()
    assert "Prediction sets" in page and "Unknown detection" in page
    assert "| method |" in capsys.readouterr().out


def test_harmonic_mean():
    assert harmonic_mean(0.8, 0.6) == 2 * 0.8 * 0.6 / 1.4
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_generated_tables_are_spliced_between_markers_keeping_the_prose(tmp_path):
    page = tmp_path / "uncertainty.md"
    splice_generated(page, "# Title\n\n", "table v1\n")
    assert page.read_text() == f"# Title\n\n{GENERATED_START}\ntable v1\n{GENERATED_END}\n"
    page.write_text("# Prose\n\nabove\n\n" + page.read_text().split("\n\n", 1)[1] + "\nbelow, by hand\n")
    splice_generated(page, "# Title\n\n", "table v2\n")
    assert page.read_text() == f"# Prose\n\nabove\n\n{GENERATED_START}\ntable v2\n{GENERATED_END}\n\nbelow, by hand\n"
