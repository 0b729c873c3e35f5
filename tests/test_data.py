"""The data pipeline: image-folder decoding and its cache, subsets, data errors, batched augmentation."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tree
from zoo.train import data as zdata
from zoo.train.batches import augment_params, crop_flip, normalize
from zoo.train.data import CLASSES, balanced_subset, load_cifar10, load_image_folder
from zoo.train.errors import ConfigError, DataError

def cifar_tree(root: Path, classes=None) -> Path:
    """``make_tree`` one folder down (``root/cifar/train/...``), 3 train and 2 test images per class."""
    return make_tree(root / "cifar", classes, train=3, test=2)


def make_tar(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(tree, arcname=tree.name)
    return out


def test_tree_and_archive_decode_to_the_same_tensors(tmp_path):
    tree = cifar_tree(tmp_path / "src")
    a = load_image_folder(tree, tmp_path / "cache")
    b = load_image_folder(make_tar(tree, tmp_path / "c.tar.gz"), tmp_path / "cache")
    for got in (a, b):
        assert got.train.images.shape == (30, 32, 32, 3) and got.train.images.dtype == torch.uint8
        assert got.test.images.shape == (20, 32, 32, 3)
        assert got.train.labels.tolist() == [c for c in range(10) for _ in range(3)]
        assert got.train.images[:, 0, 0, 0].tolist() == [10 * c + i for c in range(10) for i in range(3)]
    assert torch.equal(a.train.images, b.train.images)


def test_second_load_reads_the_cache_and_a_changed_source_is_decoded_again(tmp_path, monkeypatch):
    archive = make_tar(cifar_tree(tmp_path / "src"), tmp_path / "c.tar.gz")
    first = load_image_folder(archive, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    def no_decode(src):
        raise AssertionError("decoded again although the cache is fresh")

    monkeypatch.setattr(zdata, "decode_image_folder", no_decode)
    second = load_image_folder(archive, tmp_path / "cache")
    assert torch.equal(first.train.images, second.train.images)
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed: a new key
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_folder(archive, tmp_path / "cache")


def test_corrupt_cache_is_rebuilt(tmp_path):
    archive = make_tar(cifar_tree(tmp_path / "src"), tmp_path / "c.tar.gz")
    load_image_folder(archive, tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(b"garbage")
    assert len(load_image_folder(archive, tmp_path / "cache").train) == 30


def test_balanced_subset_takes_the_first_images_of_each_class():
    labels = torch.arange(10).repeat_interleave(5)
    idx = balanced_subset(labels, 23)
    counts = torch.bincount(labels[idx], minlength=10).tolist()
    assert counts == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert idx[:3].tolist() == [0, 1, 2]  # class 0's first three, in order
    with pytest.raises(ConfigError, match="data.subset=51 is larger than the 50"):
        balanced_subset(labels, 51)
    with pytest.raises(ConfigError, match="class 'airplane'"):
        balanced_subset(torch.arange(1, 10).repeat_interleave(5), 10)


def test_config_subsets_apply_to_both_splits(tmp_path):
    tree = cifar_tree(tmp_path / "src")
    cfg = {"name": "cifar10_folder", "path": str(tree), "cache_dir": str(tmp_path / "c"), "subset": 20, "test_subset": 10}
    got = load_cifar10(cfg)
    assert len(got.train) == 20 and len(got.test) == 10
    assert torch.bincount(got.test.labels).tolist() == [1] * 10


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "no such file or directory"),
        ("not_archive", "neither a directory nor a readable .tar"),
        ("no_splits", "holds no train/ and test/ folders"),
        ("missing_classes", "lacks the class folders dog, truck"),
        ("unreadable", r"unreadable image .*train/cat/0001.png"),
        ("wrong_size", r"cat/0000.png is 16x16, expected 32x32"),
        ("unset", "data.path is not set"),
    ],
)
def test_data_errors_name_the_problem(tmp_path, case, match):
    path: Path | None = tmp_path / "nope"
    if case == "not_archive":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif case == "no_splits":
        path = tmp_path / "empty"
        path.mkdir()
    elif case == "missing_classes":
        path = cifar_tree(tmp_path / "src", [c for c in CLASSES if c not in ("dog", "truck")])
    elif case in ("unreadable", "wrong_size"):
        path = cifar_tree(tmp_path / "src")
        if case == "unreadable":
            (path / "train" / "cat" / "0001.png").write_bytes(b"\x89PNG broken")
        else:
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path / "train" / "cat" / "0000.png")
        path = make_tar(path, tmp_path / "bad.tar.gz")  # the archive path names the member too
    elif case == "unset":
        path = None
    with pytest.raises(DataError, match=match):
        load_image_folder(path, tmp_path / "cache")


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=r"data=cifar10_folder data.path=.*ZOO_CIFAR10"):
        load_cifar10({"name": "cifar10", "root": str(tmp_path)})


def test_crop_flip_moves_pixels_as_asked():
    img = torch.arange(2 * 32 * 32 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 32, 32, 3)
    center = torch.tensor([[4, 4], [4, 4], [0, 1]])  # no shift; sample 1 flipped
    out = crop_flip(img, center)
    assert torch.equal(out[0], img[0])
    assert torch.equal(out[1], img[1].flip(1))
    shifted = crop_flip(img, torch.tensor([[0, 8], [4, 6], [0, 0]]))
    assert torch.equal(shifted[0, 4:, :], img[0, :28, :])  # content moves down 4 rows
    assert shifted[0, :4].eq(0).all()  # zero padding comes in
    assert torch.equal(shifted[1, :28, :30], img[1, 4:, 2:])  # offsets (8, 6): content moves up 4, left 2
    assert shifted[1, 28:].eq(0).all() and shifted[1, :, 30:].eq(0).all()


def test_augment_params_depend_only_on_the_generator_seed():
    a = augment_params(64, torch.Generator().manual_seed(3))
    b = augment_params(64, torch.Generator().manual_seed(3))
    c = augment_params(64, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a[:2].min() >= 0 and a[:2].max() <= 8 and set(a[2].tolist()) == {0, 1}


def test_normalize_standardizes_and_picks_the_layout():
    img = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    x = normalize(img, channels_last=True)
    assert x.shape == (4, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert normalize(img).is_contiguous()
    mean = torch.tensor(zdata.MEAN) * 255
    white = normalize(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8))
    assert torch.allclose(white[0, :, 0, 0], (255 - mean) / (torch.tensor(zdata.STD) * 255))


def test_real_archive_has_the_full_cifar10(cifar10_archive, cifar10_cache):
    data = load_image_folder(cifar10_archive, cifar10_cache)
    assert data.train.images.shape == (50000, 32, 32, 3) and data.test.images.shape == (10000, 32, 32, 3)
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert 100 < data.train.images.float().mean() < 140  # real photos, not blank
