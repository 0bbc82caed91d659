"""CoOp's benchmark layouts on generated miniatures (tiny PNGs in tmp_path), and class-name cleaning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.data import DataError, clean_classname, load_dataset
from training.datasets import BENCHMARKS
from training.learners import DEFAULT_TEMPLATE
from training.text_tower import TextTower


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (9, 99, 199)).save(path, format="PNG")


def _zhou(root: Path, name: str, image_dir: str, classes: list[str], per_split: int = 1) -> None:
    """split_zhou_<name>.json over classes as written in the json (raw CoOp names)."""
    split: dict[str, list] = {}
    for key in ("train", "val", "test"):
        split[key] = []
        for label, cls in enumerate(classes):
            for k in range(per_split):
                rel = f"{cls.replace(' ', '_').replace('/', '_')}/{key}{k}.jpg"
                _png(root / image_dir / rel if image_dir else root / rel)
                split[key].append([rel, label, cls])
    (root / f"split_zhou_{name}.json").write_text(json.dumps(split))


def _classnames_txt(root: Path, wnids: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in wnids.items()))


WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n02085620": "Chihuahua"}


def _wnid_tree(image_dir: Path, wnids: list[str], per_class: int = 2) -> None:
    for w in wnids:
        for k in range(per_class):
            _png(image_dir / w / f"{w}_{k}.JPEG")


def make_imagenet(root: Path) -> None:
    _classnames_txt(root, WNIDS)
    _wnid_tree(root / "images" / "train", list(WNIDS), 3)
    _wnid_tree(root / "images" / "val", list(WNIDS), 1)


def make_aircraft(root: Path) -> None:
    variants = ["707-320", "A300B4", "F-16A/B"]
    root.mkdir(parents=True)
    (root / "variants.txt").write_text("\n".join(variants) + "\n")
    for key in ("train", "val", "test"):
        lines = []
        for i, v in enumerate(variants):
            image_id = f"{key[:2]}{i:05d}"
            _png(root / "images" / f"{image_id}.jpg")
            lines.append(f"{image_id} {v}")
        (root / f"images_variant_{key}.txt").write_text("\n".join(lines) + "\n")


def make_v2(root: Path) -> None:
    _classnames_txt(root, WNIDS)
    for label in range(len(WNIDS)):
        _png(root / "imagenetv2-matched-frequency-format-val" / str(label) / f"{label}a.jpeg")


def make_subset(image_dir: str, wnids: list[str]) -> Callable[[Path], None]:
    """-A / -R: a subset of ImageNet's classes in wnid folders, plus ImageNet's whole classnames.txt."""

    def make(root: Path) -> None:
        _classnames_txt(root, WNIDS)
        _wnid_tree(root / image_dir, wnids)
        (root / image_dir / "README.txt").write_text("ignored, as in CoOp")

    return make


# folder -> (builder, expected class names in label order, (train, val, test) sizes)
ZHOU_CLASSES = {
    "caltech-101": ("Caltech101", "101_ObjectCategories", ["face", "leopard", "accordion", "airplanes"]),
    "oxford_pets": ("OxfordPets", "images", ["abyssinian", "american_bulldog", "great_pyrenees"]),
    "stanford_cars": ("StanfordCars", "", ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]),
    "oxford_flowers": ("OxfordFlowers", "jpg", ["pink primrose", "hard-leaved pocket orchid"]),
    "food-101": ("Food101", "images", ["apple_pie", "baby_back_ribs", "baklava"]),
    "sun397": ("SUN397", "SUN397", ["abbey", "indoor airplane_cabin", "outdoor apartment_building"]),
    "dtd": ("DescribableTextures", "images", ["banded", "blotchy", "braided"]),
    "eurosat": ("EuroSAT", "2750", ["Annual Crop Land", "Forest", "SeaLake"]),
    "ucf101": ("UCF101", "UCF-101-midframes", ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery"]),
}
EXPECTED_ZHOU = {
    "caltech-101": ["face", "leopard", "accordion", "airplane"],
    "oxford_pets": ["abyssinian", "american bulldog", "great pyrenees"],
    "stanford_cars": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"],
    "oxford_flowers": ["pink primrose", "hard-leaved pocket orchid"],
    "food-101": ["apple pie", "baby back ribs", "baklava"],
    "sun397": ["abbey", "indoor airplane cabin", "outdoor apartment building"],
    "dtd": ["banded", "blotchy", "braided"],
    "eurosat": ["Annual Crop Land", "Forest", "Sea or Lake"],
    "ucf101": ["Apply Eye Makeup", "Apply Lipstick", "Archery"],
}
LAYOUTS: dict[str, tuple[Callable[[Path], None], list[str], tuple[int, int, int]]] = {
    folder: (
        lambda root, spec=spec: _zhou(root, spec[0], spec[1], spec[2]),
        EXPECTED_ZHOU[folder],
        (len(spec[2]),) * 3,
    )
    for folder, spec in ZHOU_CLASSES.items()
}
LAYOUTS.update(
    {
        "imagenet": (make_imagenet, list(WNIDS.values()), (12, 0, 4)),
        "fgvc_aircraft": (make_aircraft, ["707-320", "A300B4", "F-16A/B"], (3, 3, 3)),
        "imagenetv2": (make_v2, list(WNIDS.values()), (0, 0, 4)),
        "imagenet-sketch": (make_subset("images", list(WNIDS)), list(WNIDS.values()), (0, 0, 8)),
        "imagenet-adversarial": (
            make_subset("imagenet-a", ["n01443537", "n02085620"]),
            ["goldfish", "Chihuahua"],
            (0, 0, 4),
        ),
        "imagenet-rendition": (
            make_subset("imagenet-r", ["n01440764", "n01484850"]),
            ["tench", "great white shark"],
            (0, 0, 4),
        ),
    }
)


def test_every_benchmark_has_a_miniature():
    assert set(LAYOUTS) == set(BENCHMARKS)
    assert len([b for b in BENCHMARKS.values() if not b.test_only]) == 11


@pytest.mark.parametrize("folder", sorted(LAYOUTS))
def test_layout_loads_like_coop(tmp_path: Path, folder: str) -> None:
    make, names, sizes = LAYOUTS[folder]
    root = tmp_path / folder
    make(root)
    ds = load_dataset(root)
    assert ds.name == BENCHMARKS[folder].name
    assert ds.classnames == names
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    for s in ds.train + ds.val + ds.test:
        assert s.path.is_file() and s.classname == ds.classnames[s.label]
    assert {s.label for s in ds.test} == set(range(len(names)))


@pytest.mark.parametrize("folder", ["imagenet", "oxford_pets", "fgvc_aircraft", "imagenet-adversarial"])
def test_renamed_folder_is_recognised(tmp_path: Path, folder: str) -> None:
    make, names, _ = LAYOUTS[folder]
    make(tmp_path / "my-copy")
    ds = load_dataset(tmp_path / "my-copy")
    assert ds.name == BENCHMARKS[folder].name and ds.classnames == names


def test_imagenet_subset_labels_follow_sorted_wnids(tmp_path: Path) -> None:
    LAYOUTS["imagenet-rendition"][0](tmp_path / "imagenet-rendition")
    ds = load_dataset(tmp_path / "imagenet-rendition")
    by_label = {s.label: s.path.parent.name for s in ds.test}
    assert by_label == {0: "n01440764", 1: "n01484850"}


# what to delete from a complete miniature, per layout
MISSING = {folder: f"split_zhou_{spec[0]}.json" for folder, spec in ZHOU_CLASSES.items()}
MISSING.update(
    {
        "imagenet": "images/val",
        "fgvc_aircraft": "images_variant_test.txt",
        "imagenetv2": "imagenetv2-matched-frequency-format-val/2",
        "imagenet-sketch": "classnames.txt",
        "imagenet-adversarial": "imagenet-a",
        "imagenet-rendition": "classnames.txt",
    }
)


@pytest.mark.parametrize("folder", sorted(MISSING))
def test_incomplete_layout_names_the_missing_file(tmp_path: Path, folder: str) -> None:
    import shutil

    root = tmp_path / folder
    LAYOUTS[folder][0](root)
    gone = root / MISSING[folder]
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    with pytest.raises(DataError, match="missing") as e:
        load_dataset(root)
    assert str(gone.resolve()) in str(e.value)


def test_unlisted_wnid_names_the_classnames_file(tmp_path: Path) -> None:
    root = tmp_path / "imagenet-sketch"
    LAYOUTS["imagenet-sketch"][0](root)
    _wnid_tree(root / "images", ["n99999999"])
    with pytest.raises(DataError, match="n99999999") as e:
        load_dataset(root)
    assert str((root / "classnames.txt").resolve()) in str(e.value)


def test_unknown_aircraft_variant(tmp_path: Path) -> None:
    root = tmp_path / "fgvc_aircraft"
    make_aircraft(root)
    with open(root / "images_variant_val.txt", "a") as fh:
        fh.write("va99999 Concorde\n")
    with pytest.raises(DataError, match="Concorde"):
        load_dataset(root)


def test_clean_classname_is_coop_s() -> None:
    assert clean_classname("american_bulldog") == "american bulldog"
    assert clean_classname("Apply_Eye_Makeup") == "Apply Eye Makeup"
    assert clean_classname("F-16A/B") == "F-16A/B"


def test_zhou_name_tokenises_like_the_handwritten_prompt(tmp_path: Path, tiny_backbone) -> None:
    """Acceptance: "american_bulldog" in a split file gives the prompt tokens of "a photo of a american bulldog."."""
    _zhou(tmp_path / "pets", "Toy", "images", ["american_bulldog", "abyssinian"])
    ds = load_dataset(tmp_path / "pets")
    assert ds.classnames[0] == "american bulldog"
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    ours = tower.tokenize([DEFAULT_TEMPLATE.format(ds.classnames[0])])
    handwritten = tiny_backbone.tokenizer(["a photo of a american bulldog."])
    raw = tiny_backbone.tokenizer(["a photo of a american_bulldog."])
    assert torch.equal(ours, handwritten)
    assert not torch.equal(ours, raw)  # the underscore is a token of its own
    tokens = tower.class_tokens(ds.classnames[:1], 0, DEFAULT_TEMPLATE)
    emb = tiny_backbone.model.token_embedding(handwritten)[0].float()
    n = int(handwritten.argmax()) + 1
    assert torch.equal(torch.cat([tokens.prefix[0], tokens.suffix[0]])[:n], emb[:n])
