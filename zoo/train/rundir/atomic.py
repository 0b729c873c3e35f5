"""Files written whole or not at all: a temporary file next to the target, then a rename.

A save that fails (a full disk, a kill) leaves the previous file as it was. Temporary files carry
this machine's name and the writer's process id, so the next start can tell the ones a dead process
left behind (and remove them) from one another process is writing right now.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import torch

from ..errors import ZooError

log = logging.getLogger(__name__)
_FULL = (errno.ENOSPC, errno.EDQUOT)
_ABANDONED_AGE = (
    3600.0  # seconds: a temporary we cannot ask about (another machine's, an older zoo's) this old is stale
)


class DiskFull(ZooError):
    """A save found no space left; the message names the file and says what is still intact."""


def _prefix(path: Path) -> str:
    return f".{path.name}."


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save(obj)`` into ``path`` through a temporary file and a rename.

    The object is serialized in memory first, so a full disk surfaces as one ``OSError`` from the
    write (not torch's "unexpected pos" from inside its zip writer) and becomes a :class:`DiskFull`.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (a :class:`DiskFull` when the
    disk is full, the temporary file removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_prefix(path)}{socket.gethostname()}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FULL:
            raise disk_full(path, len(data)) from None
        raise


def disk_full(path: Path, size: int) -> DiskFull:
    free = shutil.disk_usage(path.parent).free
    kept = f"the previous {path.name} is intact" if path.exists() else f"no earlier {path.name} exists"
    return DiskFull(
        f"no space left on the device writing {path} ({size / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free); "
        f"{kept}; free some space and run again"
    )


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries an interrupted save of ``path`` left next to it; return them.

    A temporary of a live process on this machine is left alone (it may be writing now); one whose
    writer we cannot ask (another machine's, on a shared file system, or an older zoo's, whose names
    carry no process) is removed once it is an hour old, which no save takes.
    """
    if not path.parent.is_dir():
        return []
    removed = []
    host = socket.gethostname()
    for tmp in path.parent.glob(f"{_prefix(path)}*.tmp"):
        owner = tmp.name[len(_prefix(path)) : -len(".tmp")]
        tmp_host, _, pid = owner.rpartition(".")
        if tmp_host == host and pid.isdigit():
            stale = not _alive(int(pid))
        else:
            stale = time.time() - tmp.stat().st_mtime > _ABANDONED_AGE
        if stale:
            size = tmp.stat().st_size
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
            log.info("removed %s (%.1f MB), left by an interrupted save", tmp, size / 1e6)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
