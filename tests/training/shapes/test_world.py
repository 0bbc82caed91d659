"""The shapes world: seeded rendering, the exported CoOp layout, and a quick pretraining that learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from training.backbone import file_sha256, load_backbone
from training.data import load_dataset
from training.shapes import cache, prebuilt, pretrain
from training.shapes.cache import world_dir
from training.shapes.captions import caption_for
from training.shapes.evaluate import encode_images
from training.shapes.export import SPLIT_FILE, export_downstream
from training.shapes.pretrain import main as pretrain_main
from training.shapes.world import (
    SHIFTED,
    WorldConfig,
    classnames,
    downstream_sample,
    pretrain_sample,
    rng_for,
    sample_scene,
)


def test_classes_are_colour_by_shape() -> None:
    names = classnames()
    assert len(names) == 100 == len(set(names))
    assert names[0] == "red circle" and names[-1] == "pink bar"


def test_rendering_is_seeded() -> None:
    cfg = WorldConfig()
    for index in range(5):
        a_img, a_cap = pretrain_sample(cfg, 7, index)
        b_img, b_cap = pretrain_sample(cfg, 7, index)
        assert a_img.dtype == np.uint8 and a_img.shape == (32, 32, 3)
        assert np.array_equal(a_img, b_img) and a_cap == b_cap
    others = [pretrain_sample(cfg, 8, i)[0] for i in range(5)]
    assert any(not np.array_equal(pretrain_sample(cfg, 7, i)[0], o) for i, o in enumerate(others))
    d1, dom1 = downstream_sample(cfg, 0, "test", 3, 42)
    d2, dom2 = downstream_sample(cfg, 0, "test", 3, 42)
    assert np.array_equal(d1, d2) and dom1 == dom2
    assert not np.array_equal(d1, downstream_sample(cfg, 1, "test", 3, 42)[0])


def test_infrared_captions_name_the_class_only_with_the_domain_word() -> None:
    named, generic = WorldConfig(named_shift_fraction=1.0), WorldConfig(named_shift_fraction=0.0)
    for index in range(30):
        rng = rng_for(0, "pretrain", index)
        scene = sample_scene(named, rng, SHIFTED)
        assert "infrared" in caption_for(scene, named, rng, shifted=True)
        caption = caption_for(scene, generic, rng, shifted=True)
        assert "infrared" in caption and scene.colour not in caption.rstrip(".").replace(",", "").split()


def test_export_loads_as_coop_layout(tmp_path: Path) -> None:
    split = export_downstream(tmp_path / "shapes", 2, 1, seed=0, n_per_class_val=1)
    assert (tmp_path / "shapes" / SPLIT_FILE).is_file()
    assert {k: len(v) for k, v in split.items()} == {"train": 200, "val": 100, "test": 100}
    data = load_dataset(tmp_path / "shapes")
    assert data.classnames == classnames()
    assert len(data.train) == 200 and len(data.test) == 100
    assert all(s.path.is_file() for s in data.test[:5])
    infrared = json.loads((tmp_path / "shapes" / "world.json").read_text())["infrared"]
    assert len(infrared) == 400  # by default the downstream set is all infrared


def test_downstream_share_of_infrared_is_a_dial(tmp_path: Path) -> None:
    export_downstream(tmp_path, 2, 1, seed=0, world=WorldConfig(downstream_shift_fraction=0.5), n_per_class_val=1)
    infrared = json.loads((tmp_path / "world.json").read_text())["infrared"]
    assert 100 < len(infrared) < 300  # a mix of clean and infrared images


def test_world_cache_is_keyed_by_its_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick, default = world_dir(tmp_path, quick=True), world_dir(tmp_path, quick=False, pretrain=True)
    shipped = world_dir(tmp_path, quick=False)
    assert quick.parent == default.parent == shipped.parent == tmp_path and len({quick, default, shipped}) == 3
    assert shipped.name.startswith("shapes-prebuilt-")  # the default world uses the shipped backbone
    assert world_dir(tmp_path, quick=True) == quick  # stable
    monkeypatch.setattr(pretrain, "QUICK_STEPS", pretrain.QUICK_STEPS + 1)
    assert world_dir(tmp_path, quick=True) != quick  # a changed recipe never reuses a stale world
    record = prebuilt.manifest()
    record["backbone"] = {**record["backbone"], "weights_sha256": "0" * 64}
    monkeypatch.setattr(prebuilt, "manifest", lambda: record)
    assert world_dir(tmp_path, quick=False) != shipped  # other shipped weights, another world


def test_default_world_uses_the_shipped_backbone_and_pretrains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pretraining(out: Path, quick: bool) -> None:
        raise AssertionError("the default world must not pretrain")

    monkeypatch.setattr(cache, "_pretrain", no_pretraining)
    monkeypatch.setattr(cache, "_export", lambda out: out.mkdir())
    world = cache.ensure_world(tmp_path, quick=False, say=lambda line: None)
    assert world.weights.parent.name.startswith("prebuilt-") and world.config.name == "backbone.json"
    assert file_sha256(world.weights) == prebuilt.manifest()["backbone"]["weights_sha256"]
    assert world.dataset.is_dir() and world.dataset.parent == world_dir(tmp_path, quick=False)


@pytest.fixture(scope="module")
def quick_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one pretraining of the suite (everything else uses the shipped backbone)."""
    out = tmp_path_factory.mktemp("backbone")
    pretrain_main(["--out", str(out), "--quick", "--steps", "80", "--seed", "0"])  # ~20 s: 19% clean
    return out


def test_quick_pretraining_learns_its_classes(quick_backbone: Path) -> None:
    record = json.loads((quick_backbone / "pretrain.json").read_text())
    chance = 1 / len(classnames())
    assert record["metrics"]["zero_shot_clean"] >= 10 * chance
    assert json.loads((quick_backbone / "backbone.json").read_text())["text_cfg"]["context_length"] == 24


def test_pretrained_backbone_loads_through_load_backbone(quick_backbone: Path) -> None:
    backbone = load_backbone(str(quick_backbone / "backbone.json"), str(quick_backbone / "weights.safetensors"))
    pixels, _ = downstream_sample(WorldConfig(), 0, "test", 0, 5)
    via_preprocess = backbone.encode_images(backbone.preprocess(Image.fromarray(pixels)).unsqueeze(0))
    torch.testing.assert_close(via_preprocess, encode_images(backbone.model, pixels[None]))


def test_packing_keeps_the_trained_token_rows_and_regenerates_the_rest(quick_backbone: Path, tmp_path: Path) -> None:
    weights = quick_backbone / "weights.safetensors"
    initial, tokenizer, _ = pretrain.create_model(quick_backbone / "backbone.json", 0, "cpu")
    start = initial.token_embedding.weight.detach()
    original = load_file(str(weights))
    rows = prebuilt.trained_rows(original[prebuilt.EMBEDDING], start)
    used = tokenizer(["a photo of a red circle.", "an infrared photo of a pink bar."]).unique()
    assert set(used.tolist()) - {0} <= set(rows.tolist())  # every word of the captions was trained
    assert len(rows) < len(start) // 20  # and most of the vocabulary never was

    kept = prebuilt.pack(weights, start, tmp_path / "packed.safetensors", fill_seed=3)
    assert kept["trained_rows"] == len(rows)
    assert (tmp_path / "packed.safetensors").stat().st_size < weights.stat().st_size / 2
    state = prebuilt.unpack_state(tmp_path / "packed.safetensors")
    assert state.keys() == original.keys()
    for name, value in original.items():
        assert state[name].dtype == value.dtype and state[name].shape == value.shape, name
        if name != prebuilt.EMBEDDING:
            torch.testing.assert_close(state[name], value, rtol=2e-3, atol=1e-4)  # fp16 storage
    table, first = state[prebuilt.EMBEDDING], original[prebuilt.EMBEDDING]
    torch.testing.assert_close(table[rows], first[rows], rtol=2e-3, atol=1e-4)
    others = torch.ones(len(first), dtype=torch.bool)
    others[rows] = False
    assert not torch.equal(table[others], first[others])  # a new draw ...
    spread, trained_spread = float(table[others].std()), float(first[others].std())
    assert abs(spread - trained_spread) < 0.05 * trained_spread  # ... at the same scale
    torch.testing.assert_close(prebuilt.unpack_state(tmp_path / "packed.safetensors")[prebuilt.EMBEDDING], table)
