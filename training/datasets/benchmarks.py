"""CoOp's dataset layouts (its DATASETS.md and datasets/*.py), read the way its builders read them.

Labels and class names follow CoOp exactly so published splits, prompts and numbers line up:
- nine datasets come with CoOp's fixed `split_zhou_<Name>.json`; FGVCAircraft with its native
  `images_variant_*.txt` files; ImageNet with `classnames.txt` (wnid -> CLIP's class name) and
  images/train, images/val (val is the test set, as everywhere in this literature);
- ImageNet-V2 numbers its class folders 0..999 in classnames.txt order; ImageNet-Sketch, -A and
  -R use wnid folders, labelled 0..K-1 in sorted order (K = 200 for -A and -R) and named from
  their copy of ImageNet's classnames.txt, so a model trained on ImageNet is tested on the
  subset's names only, as CoOp does;
- every class name goes through `clean_classname`; EuroSAT's and Caltech101's renames (CoOp's
  NEW_CNAMES) are applied too, which is a no-op on CoOp's published splits (they already carry
  the renamed classes) and fixes splits regenerated from the raw folder names.
A layout that is incomplete raises DataError naming the missing file or folder.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from training.data import DataError, Dataset, Sample, clean_classname, list_images, load_zhou

log = logging.getLogger(__name__)

DOWNLOAD_HINT = "see the dataset's section of docs/reproduce.md (CoOp's DATASETS.md layout)"
CLASSNAMES_FILE = "classnames.txt"

EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}
CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@dataclass(frozen=True)
class Benchmark:
    """One dataset as CoOp lays it out under $DATA/<folder>."""

    name: str  # CoOp's dataset class name; also Dataset.name
    folder: str  # CoOp's dataset_dir, the folder name under $DATA
    kind: str  # zhou | aircraft | imagenet | wnid-test | numbered-test
    image_dir: str  # relative to the folder; "" is the folder itself
    renames: dict[str, str] = field(default_factory=dict)

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.name}.json" if self.kind == "zhou" else ""

    @property
    def test_only(self) -> bool:
        return self.kind.endswith("-test")


BENCHMARKS: dict[str, Benchmark] = {
    b.folder: b
    for b in (
        Benchmark("ImageNet", "imagenet", "imagenet", "images"),
        Benchmark("Caltech101", "caltech-101", "zhou", "101_ObjectCategories", CALTECH_RENAMES),
        Benchmark("OxfordPets", "oxford_pets", "zhou", "images"),
        Benchmark("StanfordCars", "stanford_cars", "zhou", ""),
        Benchmark("OxfordFlowers", "oxford_flowers", "zhou", "jpg"),
        Benchmark("Food101", "food-101", "zhou", "images"),
        Benchmark("FGVCAircraft", "fgvc_aircraft", "aircraft", "images"),
        Benchmark("SUN397", "sun397", "zhou", "SUN397"),
        Benchmark("DescribableTextures", "dtd", "zhou", "images"),
        Benchmark("EuroSAT", "eurosat", "zhou", "2750", EUROSAT_RENAMES),
        Benchmark("UCF101", "ucf101", "zhou", "UCF-101-midframes"),
        Benchmark("ImageNetV2", "imagenetv2", "numbered-test", "imagenetv2-matched-frequency-format-val"),
        Benchmark("ImageNetSketch", "imagenet-sketch", "wnid-test", "images"),
        Benchmark("ImageNetA", "imagenet-adversarial", "wnid-test", "imagenet-a"),
        Benchmark("ImageNetR", "imagenet-rendition", "wnid-test", "imagenet-r"),
    )
}


def load_benchmark(root: Path) -> Dataset | None:
    """The dataset if `root` is one of BENCHMARKS (by CoOp's folder name, or by its marker files
    when the folder was renamed); None when it is none of them."""
    bench = BENCHMARKS.get(root.name) or _recognise(root)
    if bench is None:
        return None
    log.info("%s: reading it as CoOp's %s layout", root, bench.name)
    return _LOADERS[bench.kind](bench, root)


def _recognise(root: Path) -> Benchmark | None:
    for bench in BENCHMARKS.values():
        if bench.split_file and (root / bench.split_file).is_file():
            return bench
    if (root / "variants.txt").is_file() and (root / "images_variant_train.txt").is_file():
        return BENCHMARKS["fgvc_aircraft"]
    if (root / CLASSNAMES_FILE).is_file():
        if (root / "images" / "train").is_dir():
            return BENCHMARKS["imagenet"]
        for bench in BENCHMARKS.values():
            if bench.test_only and (root / bench.image_dir).is_dir():
                return bench
    return None


def _require(bench: Benchmark, path: Path, is_dir: bool = False) -> Path:
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        what = "folder" if is_dir else "file"
        raise DataError(f"{bench.name} layout is incomplete: {what} {path} is missing; {DOWNLOAD_HINT}")
    return path


def _load_zhou(bench: Benchmark, root: Path) -> Dataset:
    split = _require(bench, root / bench.split_file)
    if bench.image_dir:
        _require(bench, root / bench.image_dir, is_dir=True)
    return _rename(load_zhou(root, split), bench.renames)


def _rename(dataset: Dataset, renames: dict[str, str]) -> Dataset:
    if not renames:
        return dataset

    def fix(samples: list[Sample]) -> list[Sample]:
        return [dataclasses.replace(s, classname=renames.get(s.classname, s.classname)) for s in samples]

    return Dataset(
        dataset.name,
        dataset.root,
        [renames.get(n, n) for n in dataset.classnames],
        fix(dataset.train),
        fix(dataset.val),
        fix(dataset.test),
    )


def _load_aircraft(bench: Benchmark, root: Path) -> Dataset:
    """variants.txt fixes the label order; images_variant_<split>.txt lines are '<id> <variant>'."""
    variants_file = _require(bench, root / "variants.txt")
    image_dir = _require(bench, root / bench.image_dir, is_dir=True)
    classnames = [line.strip() for line in _read_lines(variants_file) if line.strip()]
    label_of = {name: i for i, name in enumerate(classnames)}
    splits: dict[str, list[Sample]] = {}
    for key in ("train", "val", "test"):
        split_file = _require(bench, root / f"images_variant_{key}.txt")
        samples = []
        for n, line in enumerate(_read_lines(split_file), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise DataError(f"{split_file}:{n}: variant {variant!r} is not in {variants_file}")
            samples.append(Sample(image_dir / f"{image_id}.jpg", label_of[variant], clean_classname(variant)))
        splits[key] = samples
    _check_images(bench, [s for v in splits.values() for s in v], image_dir)
    return Dataset(bench.name, root, [clean_classname(c) for c in classnames], **splits)


def _load_imagenet(bench: Benchmark, root: Path) -> Dataset:
    names_file = _require(bench, root / CLASSNAMES_FILE)
    names = _read_classnames(names_file)
    train_names, train = _scan_wnids(bench, _require(bench, root / bench.image_dir / "train", True), names, names_file)
    test_names, test = _scan_wnids(bench, _require(bench, root / bench.image_dir / "val", True), names, names_file)
    if train_names != test_names:
        raise DataError(
            f"{root / bench.image_dir / 'train'} and {root / bench.image_dir / 'val'} hold different class folders: "
            "make them match (labels are the sorted folder order)"
        )
    return Dataset(bench.name, root, train_names, train, [], test)


def _load_wnid_test(bench: Benchmark, root: Path) -> Dataset:
    names_file = _require(bench, root / CLASSNAMES_FILE)
    image_dir = _require(bench, root / bench.image_dir, is_dir=True)
    classnames, samples = _scan_wnids(bench, image_dir, _read_classnames(names_file), names_file)
    return Dataset(bench.name, root, classnames, [], [], samples)


def _load_numbered_test(bench: Benchmark, root: Path) -> Dataset:
    """ImageNet-V2: folder str(label) holds class `label`, labels in classnames.txt order."""
    names_file = _require(bench, root / CLASSNAMES_FILE)
    image_dir = _require(bench, root / bench.image_dir, is_dir=True)
    classnames = list(_read_classnames(names_file).values())
    samples = []
    for label, name in enumerate(classnames):
        folder = _require(bench, image_dir / str(label), is_dir=True)
        samples.extend(Sample(p, label, name) for p in list_images(folder))
    return Dataset(bench.name, root, classnames, [], [], samples)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _read_classnames(path: Path) -> dict[str, str]:
    """'<wnid> <class name>' per line, in file order, names cleaned (CoOp's read_classnames)."""
    names: dict[str, str] = {}
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name:
            raise DataError(f"{path}:{n} is {line!r}: expected '<wnid> <class name>'")
        names[wnid] = clean_classname(name)
    if not names:
        raise DataError(f"{path} lists no classes: expected '<wnid> <class name>' lines")
    return names


def _scan_wnids(
    bench: Benchmark, image_dir: Path, names: dict[str, str], names_file: Path
) -> tuple[list[str], list[Sample]]:
    """Sorted wnid folders give labels 0..K-1 (CoOp's read_data); names come from classnames.txt."""
    folders = sorted(p for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{bench.name}: no class folders in {image_dir}; {DOWNLOAD_HINT}")
    unknown = [f.name for f in folders if f.name not in names]
    if unknown:
        raise DataError(f"{bench.name}: class folders {unknown[:5]} in {image_dir} are not listed in {names_file}")
    classnames, samples = [], []
    for label, folder in enumerate(folders):
        files = list_images(folder)
        if not files:
            raise DataError(f"{bench.name}: class folder {folder} holds no images")
        classnames.append(names[folder.name])
        samples.extend(Sample(p, label, names[folder.name]) for p in files)
    return classnames, samples


def _check_images(bench: Benchmark, samples: list[Sample], image_dir: Path) -> None:
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        raise DataError(
            f"{bench.name}: {len(missing)} listed images are missing under {image_dir} "
            f"(e.g. {', '.join(p.name for p in missing[:5])}); {DOWNLOAD_HINT}"
        )


_LOADERS: dict[str, Callable[[Benchmark, Path], Dataset]] = {
    "zhou": _load_zhou,
    "aircraft": _load_aircraft,
    "imagenet": _load_imagenet,
    "wnid-test": _load_wnid_test,
    "numbered-test": _load_numbered_test,
}
