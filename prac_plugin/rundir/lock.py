"""One process per run folder: a lock taken before anything in the folder is read or written.

Two runs on one folder would adopt each other's live checkpoints and delete each other's files. The lock is an
``flock`` on ``<run folder>/.prac.lock``: the kernel releases it when its holder exits or is killed (``kill -9``
too), so a lock left by a dead process never blocks the next run, and nothing has to judge staleness. The file
holds the holder's process id, host, start time and command, for the message a refused second run prints.

Launched with several processes (``accelerate launch``, ``torchrun``), only global rank 0 locks: the other ranks
belong to the same run. If rank 0 is refused it exits, and the launcher stops the other ranks.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Optional, Sequence

from ..errors import PracError
from .files import make_folder
from .paths import LOCK_NAME, RECIPE_FILE

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there go unlocked rather than failing to start
    fcntl = None  # type: ignore[assignment]

_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # torchrun/accelerate, Open MPI, MPICH
_held: dict[str, int] = {}  # real folder path -> nesting depth, for the locks this process holds


def launch_rank() -> int:
    """This process's global rank under a multi-process launcher (0 when launched alone)."""
    world = os.environ.get("WORLD_SIZE", "1")
    names = _RANK_VARIABLES + (("LOCAL_RANK",) if world.isdigit() and int(world) > 1 else ())
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _holder_text(fd: int) -> str:
    """Who holds the lock, from the JSON its holder wrote (retried briefly: the holder may be writing it)."""
    for _ in range(20):
        try:
            info = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
            command = info.get("argv") or ""
            command = command if len(command) <= 200 else command[:197] + "..."
            return (f"process {info['pid']} on host {info['host']} (started {info['started']}"
                    + (f": {command}" if command else "") + ")")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            time.sleep(0.01)
    return "another process (it left no details)"


def _open_locked(lock_path: Path) -> int:
    """The descriptor of ``lock_path``, locked by this process; a `PracError` naming the holder if another has it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # a previous holder removed the folder it had created (and left empty)
            _make_folder(lock_path.parent)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse(fd, lock_path)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                os.close(fd)
                raise
            os.close(fd)  # a file system without locks: run unlocked, as before locks existed, but say so
            print(f"prac: warning: {str(lock_path.parent)!r} cannot be locked ({exc.strerror}); "
                  "make sure no other run uses it", file=sys.stderr)
            return -1
        except BaseException:
            os.close(fd)
            raise
        try:  # a previous holder may have removed the file after we opened it: lock the one the path names
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        _make_folder(lock_path.parent)


def _make_folder(folder: Path) -> None:
    """``mkdir -p``, retried while another process removes the empty folders it had created."""
    for attempt in range(50):
        try:
            make_folder(folder)  # a dangling link or a file in the way is one error naming it
            return
        except FileNotFoundError:
            if attempt == 49:
                raise


def _refuse(fd: int, lock_path: Path) -> NoReturn:
    holder = _holder_text(fd)
    os.close(fd)
    raise PracError(f"run folder {str(lock_path.parent)!r} is in use by {holder}; wait for that run to end, stop it, "
                    "or choose another output folder")


_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def run_lock(path: str | Path, argv: Optional[Sequence[str]] = None, read_only: bool = False) -> Iterator[bool]:
    """Hold the lock of run folder ``path`` (created, parents too, if missing) for the ``with`` body.

    A folder held by another live process is a `PracError` naming its pid, host, start time and command. Nested
    locks of one folder in one process are allowed (the outer one holds it). A folder this call created is
    removed again on exit if nothing but the lock file was written into it (a run that failed validation).
    With ``read_only``, a folder this process cannot write (a read-only mount, another user's) is not an error:
    the body runs unlocked and is told so (the ``with`` value is False), to read the run and write nothing."""
    folder = Path(path)
    if fcntl is None or launch_rank() != 0:
        yield True
        return
    if folder.exists() and not folder.is_dir():
        raise PracError(f"run folder {str(folder)!r} exists and is not a folder; choose another output folder")
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    _make_folder(folder)
    key = os.path.realpath(folder)
    if key in _held:  # this process holds it already (a command calling another that locks too)
        _held[key] += 1
        try:
            yield True
        finally:
            _held[key] -= 1
        return
    lock_path = folder / LOCK_NAME
    try:
        fd = _open_locked(lock_path)
    except OSError as exc:
        _tidy(folder, created, None)
        if not (read_only and exc.errno in _CANNOT_WRITE and not created):
            raise
        fd = None
    except BaseException:
        _tidy(folder, created, None)
        raise
    if fd is None or fd < 0:
        yield fd is not None
        return
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "argv": " ".join(shlex.join(getattr(sys, "orig_argv", sys.argv) if argv is None else argv).split())}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as exc:  # a full disk: say which file, as every other write does
            exc.filename = exc.filename or str(lock_path)
            raise
        _held[key] = 1
        yield True
    finally:
        _held.pop(key, None)
        _tidy(folder, created, lock_path)  # while still holding the lock: a waiter re-checks the path's file
        os.close(fd)  # releases the lock


def _tidy(folder: Path, created: list[Path], lock_path: Optional[Path]) -> None:
    """Leave a folder that is not a run folder (no recipe.yaml: a run refused or failed before writing) as it was:
    without the lock file, and removed with the parents this lock created if they are empty. A run folder keeps its
    lock file. Removing it is safe: a process that opened it in the meantime sees it is gone and opens the new one."""
    try:
        if lock_path is not None and not (folder / RECIPE_FILE).exists():
            lock_path.unlink()
        for created_folder in created:
            created_folder.rmdir()  # fails, and stops here, when something was written there
    except OSError:
        pass
