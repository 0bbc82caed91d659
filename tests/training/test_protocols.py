"""few-shot, cross-dataset and domain-gen end to end (tiny backbone), including the shapes-world
path (clean style -> infrared) with small exported sets standing in for the cached world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG, make_image_folder
from training import cli_eval
from training.fewshot import epochs_for
from training.report import late_loss_drop
from training.shapes import cache
from training.shapes.export import export_downstream
from training.shapes.world import WorldConfig

TINY = ["--backbone", str(TINY_CONFIG), "--weights", "none", "--device", "cpu"]
FAST = ["--quick", "--batch-size", "8", "--samples", "2", "--eval-samples", "2"]


def test_epochs_for_steps():
    assert epochs_for(100, n_images=16, batch_size=8, warmup_epochs=1) == 50
    assert epochs_for(100, n_images=800, batch_size=8, warmup_epochs=1) == 2  # never only the warm-up
    assert epochs_for(100, n_images=8, batch_size=1, warmup_epochs=0) == 12


def test_few_shot_curves(tmp_path, image_folder, capsys):
    out = tmp_path / "fs"
    argv = ["few-shot", "--data", str(image_folder), "--shots", "1", "2", "--steps", "4", *FAST]
    assert cli_eval.main([*argv, "--methods", "zeroshot", "coop", "vpt", *TINY, "--out", str(out)]) == 0
    result = json.loads((out / "fewshot.json").read_text())
    assert result["shots"] == [1, 2] and result["target_steps"] == 4
    for k, n_images in (("1", 2), ("2", 4)):  # 2 base classes
        entry = result["per_shots"][k]
        assert entry["epochs"] == epochs_for(4, n_images, 8, 1)
        assert entry["steps"] == entry["epochs"] * math.ceil(n_images / 8)
        assert {r["method"] for r in entry["runs"]} == {"zeroshot", "coop", "vpt"}
        for method, stats in entry["summary"].items():
            assert 0 <= stats["new_accuracy_mean"] <= 1 and "new_ece_mean" in stats, method
        for run in entry["runs"]:  # the loss of every epoch, so the report can show training flattened
            trained = run["method"] != "zeroshot"
            assert (len(run["train_loss_curve"] or []) == entry["epochs"]) == trained, run["method"]
    table = (out / "fewshot.md").read_text()
    assert "| coop | 2 |" in table and "few-shot --data" in table and "loss drop" in table
    assert (out / "fewshot.png").read_bytes()[:4] == b"\x89PNG"
    assert "| method | shots |" in capsys.readouterr().out


def test_few_shot_add_builds_one_sweep_over_several_runs(tmp_path, image_folder, capsys, monkeypatch):
    out = tmp_path / "fs"
    base = ["few-shot", "--data", str(image_folder), "--steps", "4", *FAST, *TINY, "--out", str(out)]
    assert cli_eval.main([*base, "--shots", "1", "--methods", "zeroshot", "coop", "--seeds", "1", "2"]) == 0
    first = json.loads((out / "fewshot.json").read_text())["per_shots"]["1"]["runs"]
    assert cli_eval.main([*base, "--add", "--shots", "1", "2", "--methods", "vpt", "coop", "--seeds", "2"]) == 0
    result = json.loads((out / "fewshot.json").read_text())
    assert result["shots"] == [1, 2] and result["config"]["seeds"] == [1, 2]
    one = result["per_shots"]["1"]
    assert sorted((r["method"], r["seed"]) for r in one["runs"]) == [
        ("coop", 1),
        ("coop", 2),
        ("vpt", 2),
        ("zeroshot", 1),
        ("zeroshot", 2),
    ]  # coop seed 2 was replaced, not doubled
    kept = next(r for r in one["runs"] if (r["method"], r["seed"]) == ("coop", 1))
    assert kept == next(r for r in first if (r["method"], r["seed"]) == ("coop", 1))
    assert set(one["summary"]) == {"zeroshot", "coop", "vpt"} and set(result["per_shots"]["2"]["summary"]) == {
        "vpt",
        "coop",
    }
    assert "--add" in result["command"] and result["command"].count("vpt-eval few-shot") == 2
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a refused --add must not train")

    monkeypatch.setattr("training.cli_fewshot.run_fewshot", no_training)
    assert cli_eval.main([*base, "--add", "--shots", "1", "--methods", "vpt", "--steps", "8"]) == 2
    assert "--steps 4" in capsys.readouterr().err
    assert cli_eval.main([*base, "--add", "--shots", "1", "--methods", "vpt", "--lr", "0.5"]) == 2
    assert "other settings (lr)" in capsys.readouterr().err
    assert json.loads((out / "fewshot.json").read_text()) == result  # a refusal writes nothing


@pytest.fixture
def shapes_world(tmp_path, monkeypatch):
    """Tiny clean and infrared exports of the shapes world, served by ensure_world/ensure_clean_set."""
    infrared, clean = tmp_path / "world" / "dataset", tmp_path / "world" / "dataset-clean"
    export_downstream(infrared, 1, 1, seed=0, n_per_class_val=0)
    export_downstream(clean, 1, 1, seed=0, world=WorldConfig(downstream_shift_fraction=0.0), n_per_class_val=0)
    world = cache.World(TINY_CONFIG, Path("none"), infrared)
    monkeypatch.setattr(cache, "ensure_world", lambda root, quick: world)
    monkeypatch.setattr(cache, "ensure_clean_set", lambda root, quick: clean)
    return infrared, clean


@pytest.mark.parametrize(
    ("protocol", "datasets"),
    [
        ("domain-gen", ["Shapes", "Shapes-infrared"]),
        ("cross-dataset", ["Shapes-base", "Shapes-new", "Shapes-new-infrared"]),
    ],
)
def test_transfer_on_the_shapes_world(tmp_path, shapes_world, protocol, datasets):
    out = tmp_path / protocol
    argv = [protocol, *FAST, "--shots", "1", "--epochs", "2", "--methods", "zeroshot", "coop", "vpt"]
    assert cli_eval.main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads((out / f"{protocol}.json").read_text())
    assert result["datasets"] == datasets and result["targets"] == datasets[1:]
    for row in result["runs"]:
        for name in datasets:
            assert 0 <= row[f"{name}/accuracy"] <= 1 and f"{name}/ece" in row
        mean = sum(row[f"{t}/accuracy"] for t in datasets[1:]) / len(datasets[1:])
        assert math.isclose(row["target_accuracy"], mean)
    table = (out / f"{protocol}.md").read_text()
    assert all(f"| {m} |" in table for m in ("zeroshot", "coop", "vpt")) and "## ECE" in table
    for png in ("accuracy.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_cross_dataset_with_source_and_targets(tmp_path, image_folder):
    other = make_image_folder(tmp_path / "other", per_class=3, seed=1)
    out = tmp_path / "xd"
    argv = ["cross-dataset", "--source", str(image_folder), "--targets", str(other), str(other), *FAST]
    argv += ["--shots", "2", "--epochs", "2", "--methods", "coop", "--augment"]
    assert cli_eval.main([*argv, *TINY, "--out", str(out)]) == 0
    result = json.loads((out / "cross-dataset.json").read_text())
    assert result["source"] == "colours" and result["targets"] == ["other", "other-2"]
    assert result["config"]["preset"] == "quick" and result["config"]["epochs"] == 2
    assert result["config"]["augment"] is True


def test_transfer_flags_must_pair(capsys):
    assert cli_eval.main(["domain-gen", "--targets", "x"]) == 2
    assert "--targets needs --source" in capsys.readouterr().err


def test_test_only_source_is_refused(tmp_path, capsys):
    from tests.training.test_datasets import LAYOUTS

    LAYOUTS["imagenet-sketch"][0](tmp_path / "imagenet-sketch")
    assert cli_eval.main(["base2new", "--data", str(tmp_path / "imagenet-sketch"), *TINY]) == 2
    assert "test-only" in capsys.readouterr().err


def test_late_loss_drop_is_the_relative_fall_over_the_last_quarter():
    assert late_loss_drop([4.0, 2.0, 1.0, 0.5]) == pytest.approx(0.5)  # 4 epochs: the last one
    assert late_loss_drop([8, 6, 5, 4, 3, 2.0, 2.0, 2.0]) == pytest.approx(0.0)  # flat for the last 2 of 8
    assert math.isnan(late_loss_drop([1.0]))  # one epoch: nothing to compare
