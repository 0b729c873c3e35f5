"""CIFAR-10 as uint8 tensors: from torchvision's download, or from an image-folder tree / tar archive.

Both sources give the same thing: a :class:`Cifar10` with ``(N, 32, 32, 3)`` uint8 images and int64
labels for the train and test splits, in the standard label order (the alphabetical class names).
An image folder is decoded once with Pillow and cached as tensors in ``cache_dir``, keyed by the
source's path and the list of its files (names, sizes, times), so a second run loads it in seconds and a
renamed class folder or a replaced file is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from ...models._cfg import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from ..errors import ConfigError, DataError
from ..rundir.atomic import DiskFull, remove_stale_temporaries, save_atomic

log = logging.getLogger(__name__)

CLASSES = CIFAR10_CLASSES
SPLITS = ("train", "test")
TRAIN_PER_CLASS = 5000  # CIFAR-10's training images of each class (what a config is checked against)
MEAN, STD = CIFAR10_MEAN, CIFAR10_STD  # the library's: every model's pretrained_cfg carries them
_CACHE_VERSION = 1  # bump when the cache layout changes, so old files are not read
MAX_IMAGE_BYTES = 1 << 20  # a 32x32 image file is a few kB in any format: a bigger one is refused unread


@dataclass
class Split:
    images: Tensor  # (N, 32, 32, 3) uint8, HWC as decoded
    labels: Tensor  # (N,) int64 in [0, 10)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, n: int | None, name: str) -> Split:
        if not n:
            return self
        idx = balanced_subset(self.labels, n, name)
        return Split(self.images[idx], self.labels[idx])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Cifar10:
    train: Split
    test: Split
    source: str  # where it came from, for logs and summaries
    val: Split | None = None  # training images held out for selection (data.val_size), never trained on


def balanced_subset(labels: Tensor, n: int, name: str = "data.subset") -> Tensor:
    """Indices of the first ``n`` images taken evenly over the classes (the first ``n % C`` classes get one more)."""
    num_classes = len(CLASSES)
    if n < 0:
        raise ConfigError(f"{name} must be >= 0 (0 or null: all images), got {n}")
    if n > len(labels):
        raise ConfigError(f"{name}={n} is larger than the {len(labels)} images available")
    picked = []
    for c in range(num_classes):
        want = n // num_classes + (1 if c < n % num_classes else 0)
        have = (labels == c).nonzero().squeeze(1)
        if len(have) < want:
            raise ConfigError(f"{name}={n} needs {want} images of class {CLASSES[c]!r}, found {len(have)}")
        picked.append(have[:want])
    return torch.cat(picked).sort().values


def check_val_size(val_size: int, subset: int | None, per_class: int = TRAIN_PER_CLASS) -> None:
    """A ConfigError unless ``val_size`` validation images (a multiple of the class count, the same
    number of each class) fit beside ``data.subset`` in ``per_class`` training images of each class."""
    num_classes = len(CLASSES)
    if val_size < 0 or val_size % num_classes:
        raise ConfigError(
            f"data.val_size must be a multiple of the {num_classes} classes (the same number of "
            f"each), >= 0 (0: no validation split), got {val_size}"
        )
    need = -(-(subset or 0) // num_classes)  # the subset's images of its largest class
    if need > per_class:
        raise ConfigError(
            f"data.subset={subset} is more than the {per_class * num_classes} training images: at most "
            f"{per_class * num_classes}, or null for all"
        )
    if subset and need + val_size // num_classes > per_class:
        most = (per_class - need) * num_classes
        raise ConfigError(
            f"data.val_size={val_size} does not fit beside data.subset={subset}: {per_class} training "
            f"images of each class leave at most {most} for validation"
        )
    if not subset and val_size // num_classes >= per_class:
        raise ConfigError(
            f"data.val_size={val_size} leaves no training images ({per_class} of each class); "
            f"at most {(per_class - 1) * num_classes}"
        )


def hold_out(train: Split, val_size: int) -> tuple[Split, Split | None]:
    """(the training images left, the validation images): the last ``val_size / C`` images of each
    class, in data order. The subset takes the first images of each class from those left, so a
    validation split changes neither which images a ``data.subset`` trains on nor how many."""
    if not val_size:
        return train, None
    per_class = val_size // len(CLASSES)
    counts = torch.bincount(train.labels, minlength=len(CLASSES))
    check_val_size(val_size, None, int(counts.min()))
    held = torch.zeros(len(train), dtype=torch.bool)
    for c in range(len(CLASSES)):
        held[(train.labels == c).nonzero().squeeze(1)[-per_class:]] = True
    keep = (~held).nonzero().squeeze(1)
    val = held.nonzero().squeeze(1)
    return Split(train.images[keep], train.labels[keep]), Split(train.images[val], train.labels[val])


def load_cifar10(data_cfg) -> Cifar10:
    """Load the dataset a ``data`` config group describes: its validation split held out of the
    training images first (``data.val_size``), then its subsets taken."""
    name = data_cfg.get("name", "cifar10")
    if name == "cifar10":
        data = load_torchvision(str(data_cfg.get("root") or "./data"))
    elif name == "cifar10_folder":
        data = load_image_folder(data_cfg.get("path"), data_cfg.get("cache_dir"))
    else:
        raise ConfigError(f"data.name must be cifar10 or cifar10_folder, got {name!r}")
    train, val = hold_out(data.train, data_cfg.get("val_size") or 0)
    return Cifar10(
        train.subset(data_cfg.get("subset"), "data.subset"),
        data.test.subset(data_cfg.get("test_subset"), "data.test_subset"),
        data.source,
        val,
    )


def load_torchvision(root: str) -> Cifar10:
    """torchvision's CIFAR-10 in ``root``, downloaded there when missing. A download that fails removes
    the ``root`` it created, so a run without a network leaves no empty data dir behind."""
    from torchvision.datasets import CIFAR10

    created = not Path(root).exists()
    splits = []
    for train in (True, False):
        try:
            ds = CIFAR10(root, train=train, download=True)
        except Exception as e:  # no network, a proxy, a full disk: the message below says what to do
            if created:
                shutil.rmtree(root, ignore_errors=True)
            raise DataError(
                f"could not download CIFAR-10 into data.root={root!r} ({type(e).__name__}: {e}). Without a network, "
                "use a local copy: data=cifar10_folder data.path=<image-folder dir or .tar.gz> "
                "(or data=cifar10_folder with the environment variable ZOO_CIFAR10 pointing at it)"
            ) from None
        splits.append(Split(torch.from_numpy(np.ascontiguousarray(ds.data)), torch.tensor(ds.targets)))
    return Cifar10(splits[0], splits[1], f"torchvision:{root}")


def load_image_folder(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> Cifar10:
    """CIFAR-10 from ``path``: a ``train/<class>/*``, ``test/<class>/*`` tree, or a .tar / .tar.gz of one.

    The tree may sit one folder down (``cifar10-jpeg/train/...``). Decoded tensors are cached in
    ``cache_dir`` (default ``$ZOO_CACHE_DIR`` or ``~/.cache/zoo``).
    """
    src = source_path(path)
    cache = cache_file(src, cache_dir)
    try:
        remove_stale_temporaries(cache)  # a save killed mid-write; never read
    except OSError:  # an unreadable cache dir: the save below says so, once
        pass
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return Cifar10(Split(blob["train_x"], blob["train_y"]), Split(blob["test_x"], blob["test_y"]), str(src))
        except Exception as e:  # a cache is only a copy: rebuild it rather than fail
            log.warning("ignoring unreadable cache %s (%s); decoding %s again", cache, e, src)
    log.info("decoding %s once; cached as %s", src, cache)
    splits = decode_image_folder(src)
    blob = {
        "train_x": splits[0].images,
        "train_y": splits[0].labels,
        "test_x": splits[1].images,
        "test_y": splits[1].labels,
    }
    try:
        save_atomic(blob, cache)
    except DiskFull as e:  # the cache only saves time: train without it
        log.warning("not caching the decoded data set: %s", e)
    except OSError as e:  # an unwritable or misplaced cache dir: the same
        log.warning(
            "not caching the decoded data set: cannot write %s (%s); set data.cache_dir to a writable "
            "dir to decode once",
            cache,
            e.strerror or e,
        )
    return Cifar10(splits[0], splits[1], str(src))


def source_path(path: str | os.PathLike | None) -> Path:
    """``data.path`` as an absolute path that exists; a DataError that says what to pass otherwise."""
    if path is None or str(path) in ("", "None", "null"):
        raise DataError(
            "data.path is not set: pass data.path=<image-folder dir or .tar.gz of one> "
            "or set the environment variable ZOO_CIFAR10"
        )
    src = Path(path).expanduser().resolve()
    if not src.exists():
        raise DataError(f"data.path={str(path)!r}: no such file or directory ({src})")
    return src


def cache_file(src: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The cache path for ``src``: it changes when the source's path or any of its files' names (the class
    folders' names with them), sizes, modification times, change times or inodes do. A file rewritten or
    replaced gets a new change time, which no tool sets back; an archive's member list can change no other
    way."""
    root = Path(cache_dir or os.environ.get("ZOO_CACHE_DIR") or "~/.cache/zoo").expanduser()
    digest = hashlib.sha1(f"{src}|v{_CACHE_VERSION}".encode())
    if src.is_dir():
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                st = os.stat(path) if os.path.exists(path) else os.lstat(path)  # a broken link: refused later
                digest.update(
                    f"{os.path.relpath(path, src)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}\n".encode()
                )
    else:
        st = src.stat()
        digest.update(f"file|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}".encode())
    return root / f"cifar10_folder-{src.name}-{digest.hexdigest()[:16]}.pt"


def decode_image_folder(src: Path) -> tuple[Split, Split]:
    """Decode every image under ``src`` (a directory or an archive) into (train, test) splits."""
    found: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in SPLITS}
    class_dirs: dict[str, set[str]] = {s: set() for s in SPLITS}
    for split, cls, name, read, where in _iter_files(src):
        if cls not in CLASSES:
            raise DataError(
                f"{where}: {split}/{cls}/ is not a CIFAR-10 class folder (expected {split}/<class>/<image> "
                f"for each of: {', '.join(CLASSES)}); move it out of the data set"
            )
        class_dirs[split].add(cls)
        found[split].append((CLASSES.index(cls), name, _decode(read, where)))
    for split in SPLITS:
        missing = [c for c in CLASSES if c not in class_dirs[split]]
        if len(missing) == len(CLASSES):
            raise DataError(
                f"{src}: found no {split}/<class>/<image> files (is it the CIFAR-10 image-folder layout, "
                f"{split}/<class>/<image> for each of {', '.join(CLASSES)}? a truncated archive looks like this too)"
            )
        if missing:
            raise DataError(
                f"{src}: {split}/ lacks the class folders {', '.join(missing)} "
                f"(expected {split}/<class>/<image> for each of: {', '.join(CLASSES)})"
            )
    splits = []
    for split in SPLITS:
        items = sorted(found[split], key=lambda t: (t[0], t[1]))
        images = torch.from_numpy(np.stack([t[2] for t in items]))
        labels = torch.tensor([t[0] for t in items], dtype=torch.int64)
        splits.append(Split(images, labels))
    return splits[0], splits[1]


def _decode(read, where: str) -> np.ndarray:
    """One 32x32 image as (32, 32, 3) uint8 RGB. Its size is read from the header before its pixels are
    decoded; 16-bit grey keeps its top 8 bits (Pillow's RGB conversion would clip it to 255); other
    high-depth modes (32-bit integer, float) are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(read())) as im:
            if im.size != (32, 32):
                raise DataError(f"image {where} is {im.size[0]}x{im.size[1]}, expected 32x32")
            if im.mode in ("I", "F"):
                raise DataError(f"image {where} has {im.mode!r} pixels (32-bit integer or float): save it as 8-bit RGB")
            if im.mode.startswith("I;16"):
                return np.repeat((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(
            f"unreadable image {where}: not an image format Pillow can decode (empty or damaged file?)"
        ) from None
    except Exception as e:
        raise DataError(f"unreadable image {where}: {type(e).__name__}: {e}") from None


def _split_class(parts: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    """(tree root, split, class, file) when ``parts`` ends in <split>/<class>/<file>, else None (READMEs,
    hidden files)."""
    if len(parts) < 3 or parts[-3] not in SPLITS or any(p.startswith((".", "__MACOSX")) for p in parts):
        return None
    return "/".join(parts[:-3]), parts[-3], parts[-2], parts[-1]


def _second_tree(src: Path, root: str, other: str, member: str) -> DataError:
    outer, inner = sorted((root, other), key=len)
    where = (
        f"a second tree {inner}/ inside {outer or '.'}/"
        if inner.startswith(f"{outer}/" if outer else "")
        else f"two trees, {root or '.'}/ and {other or '.'}/"
    )
    return DataError(f"data.path={str(src)!r} holds {where} (at {member}): keep one train/ + test/ tree per archive")


def _check_size(size: int, where: str) -> None:
    """A file bigger than a 32x32 image can be (a decompression bomb) is refused before it is read."""
    if size > MAX_IMAGE_BYTES:
        raise DataError(
            f"{where} is {size / 1e6:.1f} MB, more than the {MAX_IMAGE_BYTES >> 20} MB a 32x32 image "
            "can take: refused unread (a damaged or hostile file?)"
        )


def _iter_files(src: Path) -> Iterator[tuple[str, str, str, object, str]]:
    """Yield (split, class, file name, read(), where) for every file in a tree or archive, in storage
    order; ``where`` names the file for error messages (its path, or ``archive:member``)."""
    if src.is_dir():
        yield from _iter_tree(_tree_root(src))
        return
    root = None
    try:
        # Streaming mode ("r|*") reads a .tar.gz front to back once, far faster than random access.
        with tarfile.open(src, "r|*") as tf:
            for member in tf:
                hit = _split_class(PurePosixPath(member.name).parts) if member.isfile() else None
                if hit is None:
                    continue
                root = hit[0] if root is None else root
                if hit[0] != root:
                    raise _second_tree(src, root, hit[0], member.name)
                _check_size(member.size, f"{src}:{member.name}")
                data = tf.extractfile(member).read()
                yield *hit[1:], (lambda d=data: d), f"{src}:{member.name}"
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"data.path={str(src)!r} is neither a directory nor a readable .tar/.tar.gz archive ({type(e).__name__}: {e})"
        ) from None


def _iter_tree(root: Path) -> Iterator[tuple[str, str, str, object, str]]:
    """:func:`_iter_files` for a directory tree: every entry of a class folder is an image file (hidden ones
    aside); a folder, a broken link or an unreadable folder there is a DataError that names it."""
    for split in SPLITS:
        try:
            class_dirs = sorted(p for p in (root / split).iterdir() if not p.name.startswith("."))
            for cls_dir in class_dirs:
                if not cls_dir.is_dir():
                    continue  # a README beside the class folders
                for f in sorted(p for p in cls_dir.iterdir() if not p.name.startswith(".")):
                    if f.is_symlink() and not f.exists():
                        raise DataError(f"{f} is a broken symbolic link (to {os.readlink(f)}): fix or remove it")
                    if f.is_dir():
                        raise DataError(
                            f"{f} is a folder, where {split}/{cls_dir.name}/ should hold images only: "
                            f"expected {split}/<class>/<image> (a second tree inside this one?)"
                        )
                    _check_size(f.stat().st_size, str(f))
                    yield split, cls_dir.name, f.name, f.read_bytes, str(f)
        except PermissionError as e:
            raise DataError(f"cannot read {e.filename}: permission denied") from None


def _tree_root(src: Path) -> Path:
    if all((src / s).is_dir() for s in SPLITS):
        return src
    inner = sorted(p for p in src.iterdir() if p.is_dir() and all((p / s).is_dir() for s in SPLITS))
    if len(inner) == 1:
        return inner[0]
    if inner:
        raise DataError(
            f"data.path={str(src)!r} holds {len(inner)} trees ({', '.join(p.name for p in inner)}): "
            "point data.path at one of them"
        )
    raise DataError(f"data.path={str(src)!r} holds no train/ and test/ folders (nor one folder that holds them)")
