"""One writing zedd command at a time per scene or calibration folder.

Two commands writing the same folder at once (two terminals, a capture and a build of the same scene) would each
leave whole files (every write is atomic) but a set that belongs to neither run: build_depth.json of one build
beside the depth map of the other. :func:`folder_lock` holds an exclusive advisory lock (``fcntl.flock``) on
``<folder>/.zedd.lock`` for the length of a command; a second command on the same folder fails at once with one
error naming the folder and the command that holds it. The kernel drops the lock when its process ends, however
it ends (Ctrl-C, a crash, ``kill -9``), so no stale lock ever blocks a later command; the small file stays.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .layout import LayoutError

LOCK_NAME = ".zedd.lock"
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[Path]:
    """Hold ``<folder>/.zedd.lock`` (the folder is created) while ``command`` (e.g. ``build-depth kitchen01``) runs.

    Raises LayoutError ``<folder>: in use by another zedd command (<command>, pid <pid> on <host>, since <time>);
    ...`` when another process holds it. On a file system that cannot lock, warns and runs unguarded. Yields the
    lock file's path. Folders this call created and that hold nothing but the lock file when the command ends
    (it failed before writing) are removed again, lock file included."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    path = folder / LOCK_NAME
    fd = _locked_fd(folder, path)
    if fd is None:  # a file system without locks (some network mounts): run unguarded rather than not at all
        yield path
        return
    try:
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        if created:
            _remove_if_only_lock(created, path)  # still holding the lock: no one else can have taken it
        os.close(fd)  # releases the lock


def _locked_fd(folder: Path, path: Path) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock; None (with a warning) where the file system cannot
    lock. A lock file removed by its last holder between our open and our lock (``_remove_if_only_lock``) is
    opened again (its folder too, should that holder have removed it): a lock on a removed file would guard
    nothing."""
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LayoutError(f"{folder}: not a folder (it, or a folder above it, is a file)") from None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LayoutError(f"{folder}: in use by another zedd command ({_holder(path)}); run this one when it "
                              "has finished") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _CANNOT_LOCK:
                raise
            warnings.warn(f"{folder}: the file system cannot lock ({e.strerror}); nothing stops a second zedd "
                          "command from writing this folder at the same time", stacklevel=4)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_if_only_lock(created: list[Path], lock_path: Path) -> None:
    """Remove ``lock_path`` and then the ``created`` folders (deepest first) while each is empty."""
    try:
        if [p.name for p in lock_path.parent.iterdir()] != [LOCK_NAME]:
            return
        lock_path.unlink()
        for d in created:
            d.rmdir()  # OSError once a folder is not empty: the rest stay
    except OSError:
        pass


def _holder(path: Path) -> str:
    """'<command>, pid <pid> on <host>, since <time>' from the lock file, or what can be said without it."""
    try:
        h = json.loads(path.read_text())
        return f"{h['command']}, pid {h['pid']} on {h['host']}, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details could not be read"
