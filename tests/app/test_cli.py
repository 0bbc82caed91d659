"""vpt-serve start-up: settings from flags and env, one-line failures, the demo cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cli, demo
from app.config import Settings


def test_flags_beat_env_and_env_beats_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("VPT_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("VPT_PORT", "9001")
    monkeypatch.setenv("VPT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VPT_CLASSES", "red star, blue circle")
    args = vars(cli.build_parser().parse_args(["--port", "9002", "--token", "abc", "--uncertainty-measure", "entropy"]))
    s = Settings(**args)
    assert (s.max_batch_size, s.port, s.data_dir) == (7, 9002, tmp_path)
    assert s.classes == ["red star", "blue circle"]
    assert s.token.get_secret_value() == "abc" and "abc" not in repr(s)
    assert s.registry_path == tmp_path / "classes.sqlite"
    assert s.uncertainty_measure == "entropy"
    assert Settings().samples == 20 and Settings(max_samples=5).samples == 5


def test_empty_variables_mean_unset(monkeypatch):
    # compose writes "" for an unset ${VPT_POSTERIOR:-}; that must not become the current folder
    for name in ("VPT_POSTERIOR", "VPT_REGISTRY", "VPT_CACHE_DIR", "VPT_TOKEN"):
        monkeypatch.setenv(name, "")
    s = Settings()
    assert (s.posterior, s.registry, s.cache_dir, s.token) == (None, None, None, None)


def test_the_registry_is_a_file_or_a_database_url(monkeypatch, tmp_path):
    from app.registry import location_of

    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(registry="~/r.sqlite").registry_path == tmp_path / "r.sqlite"
    url = "postgresql://vpt:s3cret@db:5432/vpt"
    monkeypatch.setenv("VPT_REGISTRY", url)
    s = Settings()
    assert s.registry_path == url and location_of(s.registry_path) == "postgresql://vpt@db:5432/vpt"
    assert Settings(registry="postgres://db/vpt").registry_path == "postgres://db/vpt"
    assert Settings(registry_poll_s="0.5").registry_poll_s == 0.5


def test_the_default_model_name_follows_what_is_served(tmp_path):
    from app.models import default_model_name

    assert default_model_name(Settings(), []) == "zeroshot"
    assert default_model_name(Settings(), ["b", "c"]) == "b"
    assert default_model_name(Settings(posterior=tmp_path / "flowers-v2.safetensors"), ["a"]) == "flowers-v2"
    assert default_model_name(Settings(demo=True), []) == "demo-vpt"
    assert default_model_name(Settings(demo=True, posterior=tmp_path / "mine.safetensors"), []) == "mine"
    assert default_model_name(Settings(default_model="c", posterior=tmp_path / "mine.safetensors"), ["c"]) == "c"


def test_every_setting_has_a_flag():
    help_text = cli.build_parser().format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert "VPT_" + name.upper() in help_text


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--posterior", "{tmp}/missing.safetensors"], ["posterior artifact not found", "missing.safetensors"]),
        (["--backbone", "{tmp}/nope.json"], ["backbone config not found"]),
        (["--backbone", "{tiny}", "--weights", "{tmp}/w.safetensors"], ["weights file not found"]),
        (["--samples", "30"], ["samples (30) must not exceed max_samples (20)"]),
        (["--max-batch-size", "0"], ["--max-batch-size / VPT_MAX_BATCH_SIZE"]),
        (["--backbone", "{tiny}", "--weights", "none", "--registry", "{tmp}/file/r.sqlite"], ["class registry"]),
        (
            ["--backbone", "{tiny}", "--weights", "none", "--registry", "postgresql://vpt@127.0.0.1:nope/vpt"],
            ["class registry URL", "malformed"],
        ),
    ],
)
def test_start_up_mistakes_fail_with_one_line(argv, words, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    tiny = Path(__file__).resolve().parents[1] / "assets" / "tiny-clip.json"
    argv = [a.format(tmp=tmp_path, tiny=tiny) for a in argv]
    assert cli.main([*argv, "--data-dir", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0]


def test_demo_serves_the_shipped_model_and_builds_nothing(tmp_path, monkeypatch):
    from training.backbone import file_sha256
    from training.shapes import cache, prebuilt

    def no_building(*args, **kwargs):
        raise AssertionError("the demo must build nothing")

    for name in ("_pretrain", "_export"):
        monkeypatch.setattr(cache, name, no_building)
    said = []
    model = demo.prepare_demo(tmp_path, say=said.append)
    assert model.posterior == prebuilt.PREBUILT_DIR / prebuilt.POSTERIOR_FILE
    assert file_sha256(model.weights) == prebuilt.manifest()["backbone"]["weights_sha256"]
    assert model.weights.is_relative_to(tmp_path) and model.registry.parent == tmp_path / "demo"
    assert len(model.classnames) == 100 and any("unpacking" in s for s in said)
    said.clear()
    assert demo.prepare_demo(tmp_path, say=said.append) == model and not said  # unpacked once


def test_demo_start_fails_in_one_line_when_a_shipped_file_is_damaged(tmp_path, monkeypatch, capsys):
    from training.shapes import prebuilt

    unlisted = {"files": {}, "backbone": {"weights_sha256": "0" * 64}}
    monkeypatch.setattr(prebuilt, "manifest", lambda folder=None: unlisted)
    code = cli.main(["--demo", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "manifest.json" in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_demo_settings_point_at_the_cache(tmp_path, monkeypatch):
    fake = demo.DemoModel(
        tmp_path / "b.json",
        tmp_path / "w.safetensors",
        tmp_path / "p.safetensors",
        ["a", "b"],
        tmp_path / "demo" / "classes.sqlite",
    )
    monkeypatch.setattr(demo, "prepare_demo", lambda data_dir, say: fake)
    s = cli._apply_demo(Settings(demo=True, data_dir=tmp_path))
    assert (s.backbone, s.weights, s.posterior) == (str(fake.backbone), str(fake.weights), fake.posterior)
    assert s.classes == ["a", "b"] and s.registry_path == fake.registry
    mine = cli._apply_demo(Settings(demo=True, data_dir=tmp_path, registry=tmp_path / "r.sqlite", classes="x"))
    assert mine.registry_path == tmp_path / "r.sqlite" and mine.classes == ["x"]


def test_an_empty_registry_file_stops_the_start(tmp_path, capsys):
    registry = tmp_path / "classes.sqlite"
    registry.write_bytes(b"")
    argv = ["--backbone", str(Path(__file__).resolve().parents[1] / "assets" / "tiny-clip.json"), "--weights", "none"]
    assert cli.main([*argv, "--registry", str(registry), "--data-dir", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "empty file, not a new registry" in err and str(registry) in err


def test_token_file_instead_of_a_token_in_ps(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    args = vars(cli.build_parser().parse_args(["--token-file", str(secret)]))
    assert Settings(**args).token.get_secret_value() == "s3cret"
    monkeypatch.setenv("VPT_TOKEN_FILE", str(secret))
    assert Settings().token.get_secret_value() == "s3cret"
    with pytest.raises(ValueError, match="not both"):
        Settings(token="x")
    monkeypatch.delenv("VPT_TOKEN_FILE")
    (tmp_path / "empty").write_text("\n")
    for bad, words in ((tmp_path / "empty", "is empty"), (tmp_path / "missing", "cannot read")):
        with pytest.raises(ValueError, match=words):
            Settings(token_file=bad)
    assert "--token-file" in cli.build_parser().format_help()


def test_classes_with_commas_as_a_json_list(monkeypatch):
    args = vars(cli.build_parser().parse_args(["--classes", '["red, dark", "blue"]']))
    assert Settings(**args).classes == ["red, dark", "blue"]
    monkeypatch.setenv("VPT_CLASSES", '["a, b", "c"]')
    assert Settings().classes == ["a, b", "c"]
    monkeypatch.setenv("VPT_CLASSES", "a, b")
    assert Settings().classes == ["a", "b"]
    with pytest.raises(ValueError, match="JSON list"):
        Settings(classes='["unclosed"')
