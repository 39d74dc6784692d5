"""Atomic file writes (temporary file, then rename) and safe loading of tensor files.

A crash or kill never leaves a half-written artifact under its final name. A write that fails for want of space
(or permission) is an `OSError` naming the file, whichever library wrote it, so the CLI can say so in one line.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from safetensors import SafetensorError

from ..errors import PracError, not_a_file

if TYPE_CHECKING:  # torch is imported where tensors are written or read: the run lock and the CLI need none of it
    import torch


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def make_folder(folder: str | Path) -> None:
    """``mkdir -p``; a path in the way (a dangling symbolic link, a file) is a `PracError` naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        for part in [folder, *folder.parents]:
            where = f"folder {str(folder)!r}" + (f": {str(part)!r}" if part != folder else "")
            if part.is_symlink() and not part.exists():
                raise PracError(f"{where} is a symbolic link to {os.readlink(part)!r}, which does not exist; create its "
                                "target or choose another folder") from None
            if part.exists() and not part.is_dir():
                raise PracError(f"{where} exists and is not a folder; choose another folder") from None
        raise


def _name_the_file(exc: OSError, path: Path, temporary: str | None = None) -> OSError:
    if exc.filename is None or exc.filename == temporary:  # write() and close() know no name; say the target's
        exc.filename = str(path)
    return exc


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``."""
    path = Path(path)
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make shared run folders unreadable to others
        os.replace(tmp, path)
    except OSError as exc:
        raise _name_the_file(exc, path, tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            from safetensors.torch import save_file

            save_file(contiguous, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        except SafetensorError as exc:  # the Rust writer reports a full disk only in its message: "(os error 28)"
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


class _RecordingWriter:
    """A file torch.save writes through, keeping the OSError a write raised: torch reports it only as an
    ``inline_container`` RuntimeError ("unexpected pos"), which says nothing of a full disk."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` into ``path``; a failed write is the `OSError` behind it, naming the file."""
    path = Path(path)
    try:
        with open(path, "wb") as handle:
            writer = _RecordingWriter(handle)
            try:
                import torch

                torch.save(obj, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
    except OSError as exc:
        raise _name_the_file(exc, path)


def atomic_save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_torch(obj, tmp)


def load_safetensors(path: str | Path, what: str = "tensor file") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a `PracError` naming it."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise PracError(f"{what} {str(path)!r} {problem}")
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PracError(f"{what} {str(path)!r} is corrupt or truncated ({exc})") from None


def load_safetensors_and_metadata(path: str | Path, what: str = "tensor file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`load_safetensors` plus the file's string metadata."""
    tensors = load_safetensors(path, what)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return tensors, dict(handle.metadata() or {})


def state_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state_dict (weights and buffers such as BN statistics)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
