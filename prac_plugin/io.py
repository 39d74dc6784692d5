"""Atomic file writes (temporary file, then rename) and safe loading of tensor files.

A crash or kill never leaves a half-written artifact under its final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import PracError


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make shared run folders unreadable to others
        os.replace(tmp, path)
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
        save_file(contiguous, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_safetensors(path: str | Path, what: str = "tensor file") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a `PracError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise PracError(f"{what} {str(path)!r} does not exist")
    try:
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
