"""The prebuilt models shipped in the package: digests, unpacking, loading, and the figures they reach."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.artifact import load_posterior
from training.backbone import file_sha256, load_backbone
from training.shapes import prebuilt
from training.shapes.prebuilt import (
    CONFIG_FILE,
    PACKED_FILE,
    POSTERIOR_FILE,
    PREBUILT_DIR,
    PrebuiltError,
    manifest,
    posterior_path,
    shipped_backbone,
    verify,
)

MAX_SHIPPED_BYTES = 15_000_000


def test_shipped_files_match_the_digests_recorded_beside_them() -> None:
    files = verify()
    assert set(files) == {CONFIG_FILE, PACKED_FILE, POSTERIOR_FILE}
    readme = (PREBUILT_DIR / "README.md").read_text()
    assert readme == prebuilt.readme(manifest())  # generated from the manifest, not edited by hand
    for name, digest in files.items():
        assert digest in readme and name in readme
    assert sum((PREBUILT_DIR / name).stat().st_size for name in files) < MAX_SHIPPED_BYTES


def test_a_damaged_file_is_refused_with_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "prebuilt"
    shutil.copytree(PREBUILT_DIR, folder)
    with open(folder / POSTERIOR_FILE, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(PrebuiltError, match=POSTERIOR_FILE):
        verify(folder)
    with pytest.raises(PrebuiltError, match=POSTERIOR_FILE):
        posterior_path(folder)
    (folder / PACKED_FILE).unlink()
    with pytest.raises(PrebuiltError, match="missing"):
        prebuilt.unpack(tmp_path / "out", folder)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return shipped_backbone(tmp_path_factory.mktemp("data"), say=lambda line: None)


def test_the_backbone_unpacks_once_to_the_recorded_weights(tmp_path: Path) -> None:
    said: list[str] = []
    config, weights = shipped_backbone(tmp_path, say=said.append)
    assert file_sha256(weights) == manifest()["backbone"]["weights_sha256"]
    assert config.name == CONFIG_FILE and config.read_bytes() == (PREBUILT_DIR / CONFIG_FILE).read_bytes()
    assert any("unpacking" in line for line in said)
    said.clear()
    assert shipped_backbone(tmp_path, say=said.append) == (config, weights) and not said  # reused


def test_the_unpacked_backbone_reaches_its_recorded_zero_shot_figures(unpacked: tuple[Path, Path]) -> None:
    from training.shapes.pretrain import measure_zero_shot
    from training.shapes.world import WorldConfig

    backbone = load_backbone(str(unpacked[0]), str(unpacked[1]))
    record = manifest()["backbone"]
    figures = measure_zero_shot(backbone.model, backbone.tokenizer, WorldConfig(), record["pretrain"]["seed"], "cpu")
    assert figures == record["zero_shot_shipped"]


def test_the_demo_posterior_loads_on_the_shipped_backbone(unpacked: tuple[Path, Path]) -> None:
    from training.shapes.world import classnames

    backbone = load_backbone(str(unpacked[0]), str(unpacked[1]))
    posterior = load_posterior(posterior_path(), backbone)
    assert posterior.learner.cfg.variant == "vpt"
    assert posterior.classnames == classnames()[:50]  # fitted on the base half
    assert manifest()["posterior"]["clean_accuracy"] >= 0.8
