"""The data pipeline: image-folder decoding and its cache, subsets, data errors, batched augmentation."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tree
from zoo.train.data import cifar10 as zdata
from zoo.train.data.batches import augment_params, crop_flip, normalize
from zoo.train.data.cifar10 import CLASSES, balanced_subset, load_cifar10, load_image_folder
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
    assert torch.load(cache, weights_only=True)["train_x"].shape[0] == 30  # rewritten, not left garbage


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
    cfg = {
        "name": "cifar10_folder",
        "path": str(tree),
        "cache_dir": str(tmp_path / "c"),
        "subset": 20,
        "test_subset": 10,
    }
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


def test_renamed_class_folders_or_a_replaced_file_rebuild_the_cache(tmp_path, monkeypatch):
    """The cache key lists the files: swapping two class folders' names (same count, sizes and times)
    or rewriting a file in place with its old size and modification time decodes the source again."""
    tree = cifar_tree(tmp_path / "src")
    first = load_image_folder(tree, tmp_path / "cache")
    for a, b in (("cat", "tmp"), ("dog", "cat"), ("tmp", "dog")):
        (tree / "train" / a).rename(tree / "train" / b)
    swapped = load_image_folder(tree, tmp_path / "cache")
    cat, dog = CLASSES.index("cat"), CLASSES.index("dog")
    assert torch.equal(swapped.train.images[swapped.train.labels == cat], first.train.images[first.train.labels == dog])
    image = tree / "test" / "ship" / "0000.png"
    st = image.stat()
    replacement = tmp_path / "other.png"
    Image.fromarray(np.full((32, 32, 3), 201, np.uint8)).save(replacement)
    assert replacement.stat().st_size == st.st_size  # one flat colour each: the same PNG size
    image.write_bytes(replacement.read_bytes())
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    replaced = load_image_folder(tree, tmp_path / "cache")
    ship = CLASSES.index("ship")
    assert replaced.test.images[replaced.test.labels == ship][0, 0, 0, 0] == 201


@pytest.mark.parametrize(
    "layout, match",
    [
        ("eleventh", r"train/unicorn/ is not a CIFAR-10 class folder"),
        ("nested", r"cifar/train/test/airplane is a folder, where train/test/ should hold images only"),
    ],
)
def test_a_tree_with_extra_folders_is_refused_with_the_path(tmp_path, layout, match):
    """An 11th class folder or a second tree inside train/ is refused, in a directory and in an archive,
    naming the path: never merged into the data set or silently left out."""
    tree = cifar_tree(tmp_path / "src")
    if layout == "eleventh":
        shutil.copytree(tree / "train" / "cat", tree / "train" / "unicorn")
    else:
        shutil.copytree(tree / "test", tree / "train" / "test")
    with pytest.raises(DataError, match=match):
        load_image_folder(tree, tmp_path / "cache")
    archive_match = (
        match if layout == "eleventh" else r"holds a second tree cifar/train/ inside cifar/ \(at cifar/train/"
    )
    with pytest.raises(DataError, match=archive_match):
        load_image_folder(make_tar(tree, tmp_path / "c.tar.gz"), tmp_path / "cache")


def test_an_archive_with_two_trees_is_refused_with_both(tmp_path):
    tree = cifar_tree(tmp_path / "src")
    with tarfile.open(tmp_path / "two.tar", "w") as tf:
        tf.add(tree, arcname="a")
        tf.add(tree, arcname="b")
    with pytest.raises(DataError, match=r"holds two trees, a/ and b/ \(at b/"):
        load_image_folder(tmp_path / "two.tar", tmp_path / "cache")
    shutil.copytree(tree, tmp_path / "src" / "copy")  # the same in a directory: src/cifar and src/copy
    with pytest.raises(DataError, match=r"holds 2 trees \(cifar, copy\): point data.path at one of them"):
        load_image_folder(tmp_path / "src", tmp_path / "cache")


def test_16_bit_and_palette_images_decode_to_their_values_not_clipped(tmp_path):
    tree = cifar_tree(tmp_path / "src")
    grey16 = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64  # up to 65472: Pillow's RGB would clip to 255
    Image.fromarray(grey16).save(tree / "train" / "cat" / "0000.png")
    palette = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).quantize(16)
    palette.save(tree / "train" / "dog" / "0000.png")
    Image.fromarray(np.ones((32, 32), np.float32)).save(tree / "train" / "frog" / "0000.tiff")
    with pytest.raises(DataError, match=r"train/frog/0000\.tiff has 'F' pixels"):
        load_image_folder(tree, tmp_path / "cache")
    (tree / "train" / "frog" / "0000.tiff").unlink()
    data = load_image_folder(tree, tmp_path / "cache").train
    cat = data.images[data.labels == CLASSES.index("cat")][0]
    assert torch.equal(cat, torch.from_numpy((grey16 >> 8).astype(np.uint8))[..., None].expand(32, 32, 3))
    dog = data.images[data.labels == CLASSES.index("dog")][0]
    assert torch.equal(dog, torch.from_numpy(np.array(palette.convert("RGB"))))


def test_a_member_bigger_than_an_image_can_be_is_refused_unread(tmp_path, monkeypatch):
    """A decompression bomb: a few kB compressed, 2 MB as a member; refused from its header, before
    a byte of it is read or decoded."""
    tree = cifar_tree(tmp_path / "src")
    (tree / "train" / "cat" / "bomb.png").write_bytes(bytes(2 << 20))
    archive = make_tar(tree, tmp_path / "c.tar.gz")
    assert archive.stat().st_size < 100_000
    extracted, extract = [], tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: extracted.append(m.name) or extract(self, m))
    for source in (archive, tree):
        with pytest.raises(
            DataError, match=r"train/cat/bomb\.png is 2\.1 MB, more than the 1 MB a 32x32 image can take"
        ):
            load_image_folder(source, tmp_path / "cache")
    assert extracted and not any("bomb" in name for name in extracted)


def test_broken_links_unreadable_files_and_an_unwritable_cache_are_one_line(tmp_path, monkeypatch, caplog):
    tree = cifar_tree(tmp_path / "src")
    (tree / "train" / "cat" / "0009.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"train/cat/0009\.png is a broken symbolic link \(to .*gone\.png\)"):
        load_image_folder(tree, tmp_path / "cache")
    (tree / "train" / "cat" / "0009.png").unlink()
    original = Path.read_bytes

    def denied(self):  # what a file without read permission does (chmod cannot take it from root)
        if self.name == "0001.png" and self.parent.name == "bird":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"unreadable image .*train/bird/0001\.png: PermissionError"):
        load_image_folder(tree, tmp_path / "cache")
    monkeypatch.undo()
    (tmp_path / "a_file").write_text("not a dir")
    with caplog.at_level("WARNING"):
        data = load_image_folder(tree, tmp_path / "a_file" / "cache")
    assert len(data.train) == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("not caching the decoded data set: cannot write "), warnings
