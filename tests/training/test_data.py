"""Dataset loading, few-shot sampling and class splits on tiny images written into tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.data import (
    DataError,
    Dataset,
    ImageDataset,
    Sample,
    base_new_labels,
    class_subset,
    few_shot,
    load_dataset,
    load_split,
    save_split,
    select_classes,
)


def _image(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "PNG")
    Image.new("RGB", (4, 4), color).save(path, format=fmt)
    return path


def _folders(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    for name, n in counts.items():
        for i in range(n):
            _image(root / name / f"img{i:02d}{ext}")
    return root


def _zhou(root: Path, image_dir: str, name: str = "Toy") -> Path:
    """A CoOp-style dataset: 3 classes, images under root/image_dir/<class>/."""
    classes = ["red_dog", "blue_cat", "green_fox"]
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(classes):
        for key, n in (("train", 4), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{cls}/{key}{i}.jpg"
                _image(root / image_dir / rel)
                splits[key].append([rel, label, cls.replace("_", " ")])
    (root / f"split_zhou_{name}.json").write_text(json.dumps(splits))
    return root


def _samples(n_classes: int, per_class: int) -> list[Sample]:
    return [Sample(Path(f"/d/c{c}/{i:03d}.png"), c, f"c{c}") for c in range(n_classes) for i in range(per_class)]


@pytest.mark.parametrize("image_dir", ["", "images", "2750"])
def test_zhou_layout_resolves_image_dir(tmp_path: Path, image_dir: str) -> None:
    root = _zhou(tmp_path / "ds", image_dir)
    (root / "aaa_unrelated").mkdir()  # probed before the real image dir, must be skipped
    ds = load_dataset(root)
    assert ds.name == "Toy"
    assert ds.classnames == ["red dog", "blue cat", "green fox"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 3, 6)
    first = ds.train[0]
    assert first.path == (root / image_dir / "red_dog/train0.jpg").resolve()
    assert first.path.is_absolute() and first.path.is_file()
    assert (first.label, first.classname) == (0, "red dog")
    assert {s.label for s in ds.test} == {0, 1, 2}


def test_class_per_folder_split(tmp_path: Path) -> None:
    root = _folders(tmp_path / "shapes", {"b_square": 10, "a_circle": 5, "c": 1})
    _image(root / "a_circle" / "UPPER.JPG")
    (root / "a_circle" / "notes.txt").write_text("not an image")
    ds = load_dataset(root)
    assert ds.name == "shapes"
    assert ds.classnames == ["a circle", "b square", "c"]
    assert ds.val == []
    per_class = {lab: (sum(s.label == lab for s in ds.train), sum(s.label == lab for s in ds.test)) for lab in range(3)}
    assert per_class == {0: (5, 1), 1: (8, 2), 2: (1, 0)}
    assert all(s.path.suffix != ".txt" for s in ds.train + ds.test)
    assert not {s.path for s in ds.train} & {s.path for s in ds.test}
    assert all(s.classname == ds.classnames[s.label] for s in ds.train + ds.test)
    again = load_dataset(root)
    assert again.test == ds.test and again.train == ds.train


def test_train_test_folders(tmp_path: Path) -> None:
    root = tmp_path / "tt"
    _folders(root / "train", {"cat": 3, "dog": 2})
    _folders(root / "test", {"cat": 1, "dog": 2})
    ds = load_dataset(root)
    assert ds.classnames == ["cat", "dog"]
    assert len(ds.train) == 5 and len(ds.test) == 3 and ds.val == []
    assert all("train" in s.path.parts for s in ds.train)
    assert all("test" in s.path.parts for s in ds.test)
    assert [s.label for s in ds.test] == [0, 1, 1]


def test_train_test_class_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "tt"
    _folders(root / "train", {"cat": 1, "dog": 1})
    _folders(root / "test", {"cat": 1, "cow": 1})
    with pytest.raises(DataError, match="different class folders") as e:
        load_dataset(root)
    assert str(root / "train") in str(e.value)


def test_few_shot_deterministic_and_seeded(caplog: pytest.LogCaptureFixture) -> None:
    samples = _samples(3, 20) + [Sample(Path("/d/c3/only.png"), 3, "c3")]
    a = few_shot(samples, 4, seed=1)
    assert a == few_shot(list(reversed(samples)), 4, seed=1)
    assert a != few_shot(samples, 4, seed=2)
    counts = {lab: sum(s.label == lab for s in a) for lab in range(4)}
    assert counts == {0: 4, 1: 4, 2: 4, 3: 1}
    assert a == sorted(a, key=lambda s: (s.label, str(s.path)))
    assert "fewer than 4 shots" in caplog.text and "c3" in caplog.text
    assert len(few_shot(samples, 0, seed=1)) == len(samples)


@pytest.mark.parametrize(("n", "base", "new"), [(5, [0, 1, 2], [3, 4]), (4, [0, 1], [2, 3]), (1, [0], [])])
def test_base_new_labels(n: int, base: list[int], new: list[int]) -> None:
    assert base_new_labels(n) == (base, new)


def test_select_classes_relabels() -> None:
    samples = _samples(5, 2)
    picked = select_classes(samples, [4, 3])
    assert [(s.label, s.classname) for s in picked] == [(1, "c3"), (1, "c3"), (0, "c4"), (0, "c4")]


def test_class_subset(tmp_path: Path) -> None:
    ds = Dataset("d", tmp_path, [f"c{i}" for i in range(5)], _samples(5, 2), [], _samples(5, 1))
    names, restrict = class_subset(ds, "new")
    assert names == ["c3", "c4"]
    assert [(s.label, s.classname) for s in restrict(ds.test)] == [(0, "c3"), (1, "c4")]
    names, restrict = class_subset(ds, "base")
    assert names == ["c0", "c1", "c2"] and len(restrict(ds.train)) == 6
    names, restrict = class_subset(ds, "all")
    assert names == ds.classnames and restrict(ds.test) == ds.test
    with pytest.raises(DataError, match=str(tmp_path)):
        class_subset(ds, "novel")


def test_split_round_trip(tmp_path: Path) -> None:
    root = _folders(tmp_path / "ds", {"cat": 5, "dog": 5}, ext=".jpg")
    ds = load_dataset(root)
    shots = few_shot(ds.train, 2, seed=0)
    split = tmp_path / "out" / "split.json"
    save_split(split, ds.root, {"train": shots, "val": [], "test": ds.test})
    raw = json.loads(split.read_text())
    assert raw["train"][0][0] == shots[0].path.relative_to(ds.root).as_posix()
    assert not Path(raw["train"][0][0]).is_absolute()
    back = load_split(split, ds.root)
    assert back == {"train": shots, "val": [], "test": ds.test}


def test_image_dataset_reads_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (3, 2), 128).save(path)
    item = ImageDataset([Sample(path, 7, "x")], lambda im: torch.tensor(im.size + (len(im.getbands()),)))
    x, y = item[0]
    assert x.tolist() == [3, 2, 3] and y == 7 and len(item) == 1


def test_corrupt_image_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DataError, match="cannot read image") as e:
        ImageDataset([Sample(bad, 0, "x")], lambda im: torch.zeros(1))[0]
    assert str(bad) in str(e.value)


# --- every error names the offending path ------------------------------------------------------


def _raises_naming(fn, path: Path, match: str = "") -> str:
    with pytest.raises(DataError, match=match) as e:
        fn()
    assert str(path) in str(e.value)
    return str(e.value)


def test_missing_path(tmp_path: Path) -> None:
    _raises_naming(lambda: load_dataset(tmp_path / "nope"), tmp_path / "nope", "does not exist")


def test_not_a_directory(tmp_path: Path) -> None:
    f = _image(tmp_path / "one.png")
    _raises_naming(lambda: load_dataset(f), f, "not a directory")


def test_no_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "loose.png")
    _raises_naming(lambda: load_dataset(tmp_path), tmp_path.resolve(), "no class folders")


def test_empty_class_folder(tmp_path: Path) -> None:
    _folders(tmp_path, {"cat": 2})
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("x")
    _raises_naming(lambda: load_dataset(tmp_path), (tmp_path / "dog").resolve(), "no images")


def test_several_split_files(tmp_path: Path) -> None:
    _zhou(tmp_path, "images", "A")
    (tmp_path / "split_zhou_B.json").write_text("{}")
    msg = _raises_naming(lambda: load_dataset(tmp_path), tmp_path.resolve(), "several split files")
    assert "split_zhou_A.json" in msg and "split_zhou_B.json" in msg


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "cannot read split file"),
        ('{"train": [], "test": []}', "malformed"),
        ('{"train": {}, "val": [], "test": []}', "'train' must be a list"),
        ('{"train": [["a.jpg", "0", "cat"]], "val": [], "test": []}', r"train\[0\]"),
        ('{"train": [["a.jpg", 0, "cat"], ["b.jpg", 0, "dog"]], "val": [], "test": []}', "both"),
    ],
)
def test_malformed_split(tmp_path: Path, content: str, match: str) -> None:
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    split = tmp_path / "split_zhou_X.json"
    split.write_text(content)
    _raises_naming(lambda: load_dataset(tmp_path), split.resolve(), match)


def test_split_labels_not_contiguous(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    split = tmp_path / "split_zhou_X.json"
    split.write_text(json.dumps({"train": [["a.jpg", 1, "cat"]], "val": [], "test": []}))
    _raises_naming(lambda: load_dataset(tmp_path), split.resolve(), "0..n-1")


def test_split_missing_images(tmp_path: Path) -> None:
    root = _zhou(tmp_path, "jpg")
    for i in range(2):
        (root / "jpg" / "green_fox" / f"test{i}.jpg").unlink()
    msg = _raises_naming(lambda: load_dataset(root), (root / "split_zhou_Toy.json").resolve(), "2 images")
    assert "green_fox/test0.jpg" in msg


def test_split_image_dir_not_found(tmp_path: Path) -> None:
    root = _zhou(tmp_path, "images/deeper")  # only root and its immediate subfolders are probed
    _raises_naming(lambda: load_dataset(root), (root / "split_zhou_Toy.json").resolve(), "neither under")


def test_load_split_missing_file_and_image(tmp_path: Path) -> None:
    _raises_naming(lambda: load_split(tmp_path / "s.json", tmp_path), tmp_path / "s.json", "does not exist")
    split = tmp_path / "s.json"
    _image(tmp_path / "a.png")
    save_split(split, tmp_path, {"train": [Sample(tmp_path / "a.png", 0, "a")], "val": [], "test": []})
    (tmp_path / "a.png").unlink()
    _raises_naming(lambda: load_split(split, tmp_path), split, "neither under")


def test_few_shot_logs_nothing_when_enough(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert len(few_shot(_samples(2, 5), 5, seed=3)) == 10
    assert caplog.text == ""
