"""Image datasets for prompt tuning: loading, few-shot sampling and the base/new class split.

The benchmark layouts the prompt-learning literature uses (CoOp's 11 datasets and the ImageNet
variants) live in training/datasets/ and are tried first; otherwise two generic layouts are read:
a `split_zhou_<Name>.json` file (CoOp/Dassl format) and plain class-per-folder trees (so any
folder of images works). Class names pass through `clean_classname` in every loader, so prompts
match CoOp's. Every problem raises `DataError` naming the file and what to do, because a bad path
should stop a run before the backbone loads, not an hour into feature extraction.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
SPLIT_KEYS = ("train", "val", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 20240611  # fixed so a class-per-folder tree always splits the same way
_SHOW_MISSING = 5


class DataError(ValueError):
    """A dataset, split file or image that cannot be used; the message names the path."""


def clean_classname(name: str) -> str:
    """CoOp's (and CoCoOp's, and the official VPT code's) prompt learners use name.replace("_", " "):
    "american_bulldog" would otherwise tokenise with an extra "_" token and change every prompt."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute path of the image
    label: int
    classname: str


@dataclass
class Dataset:
    name: str
    root: Path
    classnames: list[str]  # index == label
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset folder: a known benchmark layout (training/datasets), else a
    split_zhou_*.json inside it, else class-per-folder."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"dataset path {root} does not exist: pass a folder of class folders or one "
            "holding a split_zhou_<Name>.json"
        )
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a directory: pass the folder that holds the images")
    root = root.resolve()
    from training.datasets import load_benchmark  # imported here: that package builds on this module

    dataset = load_benchmark(root)
    if dataset is None:
        split_files = sorted(root.glob("split_zhou_*.json"))
        if len(split_files) > 1:
            names = ", ".join(f.name for f in split_files)
            raise DataError(f"{root} holds several split files ({names}): keep exactly one")
        dataset = load_zhou(root, split_files[0]) if split_files else _load_folders(root)
    log.info(
        "dataset %s from %s: %d classes, %d train / %d val / %d test images",
        dataset.name,
        root,
        len(dataset.classnames),
        len(dataset.train),
        len(dataset.val),
        len(dataset.test),
    )
    return dataset


def load_zhou(root: Path, split_file: Path) -> Dataset:
    """A dataset described by a split_zhou-format file; its name is the file's <Name> part."""
    splits = _read_split(split_file, root)
    labels: dict[int, str] = {}
    for samples in splits.values():
        for s in samples:
            labels.setdefault(s.label, s.classname)
    if sorted(labels) != list(range(len(labels))):
        raise DataError(f"{split_file}: labels must be 0..n-1, found {sorted(labels)[:10]}...: fix the split file")
    name = split_file.stem[len("split_zhou_") :]
    return Dataset(name, root, [labels[i] for i in range(len(labels))], **splits)


def _read_split(split_file: Path, root: Path) -> dict[str, list[Sample]]:
    """Parse a split_zhou-format file; relative paths resolve against root or a subfolder of it."""
    try:
        raw = json.loads(split_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read split file {split_file}: {e}") from e
    if not isinstance(raw, dict) or any(k not in raw for k in SPLIT_KEYS):
        raise DataError(
            f"split file {split_file} is malformed: expected a JSON object with keys {', '.join(SPLIT_KEYS)}"
        )
    items: dict[str, list[tuple[str, int, str]]] = {}
    for key in SPLIT_KEYS:
        if not isinstance(raw[key], list):
            raise DataError(f"split file {split_file} is malformed: '{key}' must be a list")
        items[key] = [_check_item(split_file, key, i, item) for i, item in enumerate(raw[key])]
    seen: dict[int, str] = {}
    for key in SPLIT_KEYS:
        for _, label, classname in items[key]:
            if seen.setdefault(label, classname) != classname:
                raise DataError(
                    f"split file {split_file} is malformed: label {label} is both '{seen[label]}' and '{classname}'"
                )
    image_dir = _find_image_dir(split_file, root, items)
    missing = [rel for key in SPLIT_KEYS for rel, _, _ in items[key] if not (image_dir / rel).is_file()]
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING])
        raise DataError(
            f"{len(missing)} images listed in {split_file} are missing under {image_dir} "
            f"(e.g. {shown}): download the complete dataset or regenerate the split"
        )
    return {
        key: [Sample(image_dir / rel, label, clean_classname(name)) for rel, label, name in items[key]]
        for key in SPLIT_KEYS
    }


def _check_item(split_file: Path, key: str, index: int, item: object) -> tuple[str, int, str]:
    ok = (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
        and item[1] >= 0
        and isinstance(item[2], str)
    )
    if not ok:
        raise DataError(
            f"split file {split_file} is malformed: {key}[{index}] is {item!r}, expected "
            "[relative image path, label >= 0, classname]"
        )
    return item[0], item[1], item[2]  # type: ignore[index,return-value]


def _find_image_dir(split_file: Path, root: Path, items: dict[str, list[tuple[str, int, str]]]) -> Path:
    """The image dir varies per dataset (root, images/, jpg/, 2750/...): probe with one listed file."""
    first = next((entries[0][0] for entries in items.values() if entries), None)
    if first is None:
        return root
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for candidate in candidates:
        if (candidate / first).is_file():
            return candidate
    raise DataError(
        f"image {first} listed in {split_file} is neither under {root} nor under any of its "
        "subfolders: point at the folder that holds the dataset's images"
    )


def _load_folders(root: Path) -> Dataset:
    train_dir, test_dir, val_dir = root / "train", root / "test", root / "val"
    if _has_class_folders(train_dir) and _has_class_folders(test_dir):
        train_names, train = _scan_classes(train_dir)
        test_names, test = _scan_classes(test_dir)
        if test_names != train_names:
            raise DataError(
                f"{train_dir} and {test_dir} have different class folders: "
                f"{sorted(set(train_names) ^ set(test_names))[:10]}; make them match"
            )
        val: list[Sample] = []
        if _has_class_folders(val_dir):
            val_names, val = _scan_classes(val_dir)
            if val_names != train_names:
                raise DataError(f"{val_dir} has different class folders from {train_dir}; make them match")
        return Dataset(root.name, root, train_names, train, val, test)
    classnames, samples = _scan_classes(root)
    train, test = [], []
    for label in range(len(classnames)):
        files = [s for s in samples if s.label == label]  # already sorted by path
        n_test = max(1, round(TEST_FRACTION * len(files))) if len(files) >= 2 else 0
        rng = random.Random(f"{SPLIT_SEED}:{classnames[label]}")
        test_idx = set(rng.sample(range(len(files)), n_test))
        for i, s in enumerate(files):
            (test if i in test_idx else train).append(s)
    return Dataset(root.name, root, classnames, train, [], test)


def _has_class_folders(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def _scan_classes(root: Path) -> tuple[list[str], list[Sample]]:
    """Class folders sorted by name give labels 0..n-1, named by clean_classname."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"no class folders in {root}: expected {root}/<classname>/<images> or a split_zhou_<Name>.json")
    classnames: list[str] = []
    samples: list[Sample] = []
    for label, folder in enumerate(folders):
        name = clean_classname(folder.name)
        files = list_images(folder)
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}):"
                " add images or remove the folder"
            )
        classnames.append(name)
        samples.extend(Sample(f, label, name) for f in files)
    return classnames, samples


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files and other suffixes skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def few_shot(samples: list[Sample], shots: int, seed: int) -> list[Sample]:
    """Draw `shots` images per class, reproducibly; shots <= 0 keeps everything."""
    ordered = sorted(samples, key=lambda s: (s.label, str(s.path)))
    if shots <= 0:
        return ordered
    by_label: dict[int, list[Sample]] = {}
    for s in ordered:
        by_label.setdefault(s.label, []).append(s)
    rng = random.Random(seed)
    picked: list[Sample] = []
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < shots:
            log.warning(
                "class %d (%s) has only %d images, fewer than %d shots: keeping all",
                label,
                group[0].classname,
                len(group),
                shots,
            )
            picked.extend(group)
        else:
            picked.extend(rng.sample(group, shots))
    return sorted(picked, key=lambda s: (s.label, str(s.path)))


def base_new_labels(n_classes: int) -> tuple[list[int], list[int]]:
    """The paper's protocol: classes sorted by label, the first ceil(n/2) are base, the rest new."""
    if n_classes < 0:
        raise ValueError(f"n_classes must be >= 0, got {n_classes}")
    n_base = math.ceil(n_classes / 2)
    return list(range(n_base)), list(range(n_base, n_classes))


def select_classes(samples: list[Sample], labels: list[int]) -> list[Sample]:
    """Keep samples of `labels` and relabel them 0..len(labels)-1 in the order given."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    new_label = {old: new for new, old in enumerate(labels)}
    return [Sample(s.path, new_label[s.label], s.classname) for s in samples if s.label in new_label]


def class_subset(dataset: Dataset, which: str) -> tuple[list[str], Callable[[list[Sample]], list[Sample]]]:
    """Class names of the base/new/all subset and a function that filters and relabels samples to it."""
    base, new = base_new_labels(len(dataset.classnames))
    subsets = {"base": base, "new": new, "all": base + new}
    if which not in subsets:
        raise DataError(f"unknown class subset '{which}' for dataset {dataset.root}: use base, new or all")
    labels = subsets[which]

    def restrict(samples: list[Sample]) -> list[Sample]:
        return select_classes(samples, labels)

    return [dataset.classnames[i] for i in labels], restrict


def require_train(dataset: Dataset) -> Dataset:
    """Stop early when a dataset has nothing to train on (ImageNet-V2/-Sketch/-A/-R are test-only)."""
    if not dataset.train:
        raise DataError(
            f"{dataset.name} at {dataset.root} has no training images (a test-only set): "
            "train on another dataset and test on this one (vpt-eval domain-gen --targets)"
        )
    return dataset


def subset_dataset(dataset: Dataset, which: str) -> Dataset:
    """The dataset cut to its base/new/all classes (relabelled), named "<name>-<which>"."""
    names, restrict = class_subset(dataset, which)
    return Dataset(
        f"{dataset.name}-{which}",
        dataset.root,
        names,
        restrict(dataset.train),
        restrict(dataset.val),
        restrict(dataset.test),
    )


def save_split(path: Path, root: Path, splits: dict[str, list[Sample]]) -> None:
    """Write splits in the split_zhou format (paths relative to root) so a few-shot draw can be reused."""
    path, root = Path(path), Path(root).resolve()
    unknown = set(splits) - set(SPLIT_KEYS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}: use {', '.join(SPLIT_KEYS)}")
    out: dict[str, list[list[object]]] = {}
    for key in SPLIT_KEYS:
        out[key] = []
        for s in splits.get(key, []):
            try:
                rel = Path(s.path).resolve().relative_to(root)
            except ValueError as e:
                raise DataError(f"cannot save {s.path} in split {path}: it is not under {root}") from e
            out[key].append([rel.as_posix(), s.label, s.classname])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    log.info("saved split %s (%s)", path, ", ".join(f"{k} {len(v)}" for k, v in out.items()))


def load_split(path: Path, root: Path) -> dict[str, list[Sample]]:
    """Read a split written by save_split (or a CoOp split_zhou file) against the dataset root."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist: check the path or drop the option to draw anew")
    return _read_split(path, Path(root).resolve())


class ImageDataset(torch.utils.data.Dataset):
    """Decodes images lazily so only the current batch sits in memory."""

    def __init__(self, samples: list[Sample], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        try:
            with Image.open(sample.path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {sample.path}: {e}") from e
        return self.transform(rgb), sample.label
