"""Training augmentation: the official transform, fresh crops every epoch, and vpt-train --augment."""

import json

import torch
from safetensors import safe_open
from torchvision import transforms as T

from tests.conftest import TINY_CONFIG
from training import cli_train
from training.classifier import PromptClassifier
from training.data import ImageDataset, load_dataset
from training.features import AugmentedFeatures, augment_transform, encode_samples
from training.fit import FitConfig, fit
from training.learners import LearnerConfig


def test_augment_transform_is_the_official_one(tiny_backbone):
    steps = augment_transform(tiny_backbone.preprocess).transforms
    crop, flip, _, norm = steps
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC and crop.ratio == (3 / 4, 4 / 3)
    assert crop.size == next(t for t in tiny_backbone.preprocess.transforms if isinstance(t, T.CenterCrop)).size
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    assert norm.mean == (0.48145466, 0.4578275, 0.40821073)


def test_augmented_features_change_every_visit(tiny_backbone, image_folder):
    samples = load_dataset(image_folder).train[:3]
    aug = AugmentedFeatures(tiny_backbone, samples)
    idx = torch.tensor([0, 2])
    torch.manual_seed(0)
    a = aug[idx]
    b = aug[idx]
    torch.manual_seed(0)
    again = aug[idx]
    plain, _ = encode_samples(tiny_backbone, samples)
    assert a.shape == (2, plain.shape[1]) and len(aug) == 3
    assert not torch.allclose(a, b)  # a new crop each time
    assert torch.equal(a, again)  # seeded: reproducible
    assert not torch.allclose(a, plain[[0, 2]])


def test_fit_encodes_each_image_once_per_epoch(tiny_backbone, image_folder):
    ds = load_dataset(image_folder)
    names = ds.classnames
    aug = AugmentedFeatures(tiny_backbone, ds.train)
    seen: list[int] = []

    class Spy(ImageDataset):
        def __getitem__(self, i: int):
            seen.append(i)
            return super().__getitem__(i)

    aug.images = Spy(ds.train, aug.images.transform)
    labels = torch.tensor([s.label for s in ds.train])
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("coop"), names)
    fit(clf, aug, labels, FitConfig(epochs=2, batch_size=4, warmup_epochs=0))
    assert sorted(seen) == sorted(list(range(len(ds.train))) * 2)


def test_vpt_train_augment_records_it(tmp_path, image_folder):
    out = tmp_path / "p.safetensors"
    args = ["--data", str(image_folder), "--variant", "coop", "--shots", "2", "--classes", "all"]
    args += ["--backbone", str(TINY_CONFIG), "--weights", "none", "--epochs", "1", "--batch-size", "4"]
    args += ["--device", "cpu", "--augment", "--out", str(out)]
    assert cli_train.main(args) == 0
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["training"])["augment"] is True


def test_vpt_train_paper_preset(tmp_path, image_folder, monkeypatch):
    """--preset paper takes the paper's row for the dataset (batch 1, L, lr, augmentation); flags still win."""
    from training import presets

    monkeypatch.setitem(presets.PAPER_L_EPOCHS, "colours", (3, 7))
    out = tmp_path / "p.safetensors"
    args = ["--data", str(image_folder), "--variant", "vpt", "--shots", "1", "--classes", "all"]
    args += ["--backbone", str(TINY_CONFIG), "--weights", "none", "--device", "cpu", "--preset", "paper"]
    assert cli_train.main([*args, "--epochs", "2", "--out", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        training = json.loads(f.metadata()["training"])
    assert (training["batch_size"], training["samples"], training["lr"]) == (1, 3, 0.002)
    assert training["epochs"] == 2 and training["augment"] is True and training["preset"] == "paper"
    assert presets.paper("colours")["epochs"] == 7


def test_paper_settings_per_dataset():
    from training import presets

    assert presets.paper("UCF101")["samples"] == 5 and presets.paper("OxfordPets")["samples"] == 40
    assert presets.paper("EuroSAT")["epochs"] == 60
    assert presets.paper("Caltech101", transfer=True)["samples"] == 10  # trained on ImageNet
    from training.datasets import BENCHMARKS

    # keyed by the names the loaders give the 11 datasets
    assert set(presets.PAPER_L_EPOCHS) == {b.name for b in BENCHMARKS.values() if not b.test_only}
