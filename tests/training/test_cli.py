"""vpt-train then vpt-eval, end to end, on a generated class-per-folder dataset."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.conftest import TINY_CONFIG
from training import cli_eval, cli_train


def _train_args(data, out, variant="vpt", *extra):
    return [
        "--data",
        str(data),
        "--variant",
        variant,
        "--shots",
        "4",
        "--classes",
        "all",
        "--backbone",
        str(TINY_CONFIG),
        "--weights",
        "none",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "4",
        "--samples",
        "3",
        "--calibration-samples",
        "3",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_train_then_eval(tmp_path, image_folder, capsys):
    out = tmp_path / "run" / "posterior.safetensors"
    assert cli_train.main(_train_args(image_folder, out)) == 0
    assert out.is_file() and not out.with_suffix(".ckpt").exists()
    split = out.with_name("posterior.split.json")
    assert len(json.loads(split.read_text())["train"]) == 4 * 4  # 4 shots x 4 classes, written for reruns
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert meta["variant"] == "vpt" and json.loads(meta["classnames"]) == ["blue", "green", "red", "yellow"]
    fitted_test = json.loads(meta["metrics"])["test"]
    capsys.readouterr()

    report = tmp_path / "eval.json"
    assert (
        cli_eval.main(
            [
                "--data",
                str(image_folder),
                "--posterior",
                str(out),
                "--samples",
                "3",
                "--device",
                "cpu",
                "--out",
                str(report),
            ]
        )
        == 0
    )
    figures = json.loads(report.read_text())
    for key in ("accuracy", "nll", "brier", "ece", "auroc_entropy", "auroc_mutual_information"):
        assert key in figures
    assert figures["model"].startswith("vpt:") and figures["n"] > 0
    # a fresh process rebuilds the same backbone and posterior: same figures as at the end of training
    assert figures["accuracy"] == fitted_test["accuracy"] and abs(figures["nll"] - fitted_test["nll"]) < 1e-5
    assert json.loads(capsys.readouterr().out)["accuracy"] == figures["accuracy"]


def test_split_file_reproduces_the_shots(tmp_path, image_folder):
    first = tmp_path / "a" / "p.safetensors"
    assert cli_train.main(_train_args(image_folder, first, "coop")) == 0
    second = tmp_path / "b" / "p.safetensors"
    split = first.with_name("p.split.json")
    assert cli_train.main(_train_args(image_folder, second, "coop", "--split", str(split), "--seed", "9")) == 0
    with safe_open(str(first), "pt") as a, safe_open(str(second), "pt") as b:
        assert json.loads(a.metadata()["training"])["n_train"] == json.loads(b.metadata()["training"])["n_train"]


def test_eval_zeroshot_needs_no_artifact(image_folder, capsys):
    code = cli_eval.main(
        [
            "--data",
            str(image_folder),
            "--variant",
            "zeroshot",
            "--backbone",
            str(TINY_CONFIG),
            "--weights",
            "none",
            "--classes",
            "new",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["model"] == "zeroshot" and figures["classes"] == "new"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
        (["--backbone", "no-such-model"], "unknown backbone"),
        (["--weights", "/nonexistent/w.safetensors"], "weights file not found"),
        (["--n-ctx", "3"], "n-ctx"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, image_folder, capsys, args, message):
    base = _train_args(image_folder, tmp_path / "p.safetensors")
    for flag, value in zip(args[::2], args[1::2]):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    assert cli_train.main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_corrupt_image_names_the_file(tmp_path, image_folder, capsys):
    bad = image_folder / "red" / "0.png"
    bad.write_bytes(b"\x89PNG broken")
    assert cli_train.main(_train_args(image_folder, tmp_path / "p.safetensors", "coop", "--shots", "0")) == 2
    assert str(bad) in capsys.readouterr().err


def test_train_calibrates_and_vpt_calibrate_recalibrates_for_a_class_set(tmp_path, image_folder, capsys):
    from training import cli_calibrate
    from training.artifact import read_metadata

    out = tmp_path / "p.safetensors"
    base_only = [a if a != "all" else "base" for a in _train_args(image_folder, out)]
    assert cli_train.main(base_only) == 0
    cal = read_metadata(out)["calibration"]
    assert cal.classnames == ["blue", "green"] and cal.temperature > 0 and cal.scores == sorted(cal.scores)
    # held out: the base images the 4-shot sampler did not pick
    assert len(cal.scores) == read_metadata(out)["metrics"]["calibration"]["n"] > 0
    capsys.readouterr()
    again = tmp_path / "all.safetensors"
    args = ["--posterior", str(out), "--data", str(image_folder), "--classes", "all", "--out", str(again)]
    assert cli_calibrate.main([*args, "--samples", "3", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == "all"
    meta = read_metadata(again)
    assert meta["calibration"].classnames == ["blue", "green", "red", "yellow"]
    assert meta["classnames"] == ["blue", "green"]  # still the classes it was trained on
    # a few held-out image features travel with both artifacts (the serving engine's probes)
    for path in (out, again):
        with safe_open(str(path), "pt") as fh:
            probes = fh.get_tensor("probe_features")
        assert probes.shape[0] > 0 and torch.allclose(probes.norm(dim=-1), torch.ones(len(probes)), atol=1e-4)
    assert cli_calibrate.main([*args[:-1], str(tmp_path / "x.bin"), "--device", "cpu"]) == 2
    assert ".safetensors" in capsys.readouterr().err
