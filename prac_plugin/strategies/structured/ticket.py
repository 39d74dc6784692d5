"""Exported structured tickets: a compact timm model as ``weights.safetensors`` + ``ticket.json`` (no pickle).

``ticket.json`` holds the structure (timm model name and kwargs, input size, each level's pruning history and
attention shapes), the ticket's MACs, parameters, measured latency and accuracy, and where it came from.
`load_structured_ticket` rebuilds the architecture from it and loads the weights, without the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from ...version import __version__
from ...errors import PracError
from ...rundir.files import atomic_save_safetensors, atomic_write_json, load_safetensors, state_to_cpu
from ...rundir.folder import WEIGHTS_FILE, RunDirectory, read_json
from .channels import count_macs_params, create_dense, example_input, replay
from .latency import latency_report
from .options import STRUCTURE_FILE, STRUCTURED

TICKET_FILE = "ticket.json"
FORMAT_VERSION = 1


def _read_json(path: Path, what: str) -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise PracError(f"{what} {str(path)!r} should hold a JSON mapping")
    return data


def read_structure(path: str | Path) -> dict:
    """A level's ``structure.json`` (or an export's ``ticket.json``)."""
    return _read_json(Path(path), "ticket structure")


def load_weights(model: nn.Module, weights: dict, where: str) -> None:
    """Load ``weights`` strictly; a missing, extra or misshapen tensor is a `PracError` naming it."""
    expected = model.state_dict()
    for name in expected:
        if name not in weights:
            raise PracError(f"{where} has no tensor {name!r}, which the rebuilt ticket needs")
        if tuple(weights[name].shape) != tuple(expected[name].shape):
            raise PracError(
                f"{where}: tensor {name!r} has shape {tuple(weights[name].shape)}, the rebuilt ticket has {tuple(expected[name].shape)}"
            )
    extra = [name for name in weights if name not in expected]
    if extra:
        raise PracError(f"{where}: tensor {extra[0]!r} is not part of the rebuilt ticket")
    model.load_state_dict(weights)


def build_ticket(structure: dict, weights: dict, where: str) -> nn.Module:
    """The compact model: the dense timm model, its pruning history replayed, the ticket's weights loaded."""
    model = create_dense(structure)
    replay(model, structure.get("levels", []), example_input(structure))
    load_weights(model, weights, where)
    return model.eval()


def load_structured_ticket(path: str | Path) -> nn.Module:
    """Rebuild an exported structured ticket (a folder from ``prac export``, or its ``ticket.json``) in eval mode."""
    path = Path(path)
    folder = path.parent if path.name == TICKET_FILE else path
    info = _read_json(folder / TICKET_FILE, "structured ticket")
    if info.get("format_version") != FORMAT_VERSION:
        raise PracError(f"structured ticket {str(folder)!r} has format_version {info.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    weights_path = folder / WEIGHTS_FILE
    return build_ticket(info, load_safetensors(weights_path, what="ticket weights"), f"ticket weights {str(weights_path)!r}")


def export_ticket(
    run_path: str | Path, level: Optional[int] = None, output: Optional[str | Path] = None,
    batch_sizes: Sequence[int] = (1, 64), repeats: int = 30,
) -> tuple[Path, dict]:
    """Write level ``level`` (default: the last completed) of a structured run as a compact ticket; returns the
    folder and the contents of its ``ticket.json``."""
    run = RunDirectory.existing(run_path)
    level = run.chosen_level(level, str(run_path))
    strategy = (run.recipe().get("ticket") or {}).get("strategy")
    if strategy != STRUCTURED.name:
        raise PracError(f"run {str(run_path)!r} used ticket.strategy {strategy!r}; prac export writes tickets of ticket.strategy: {STRUCTURED.name}")
    structure = read_structure(run.level_file(level, STRUCTURE_FILE))
    ticket = build_ticket(structure, run.level_weights(level), f"level {level} weights")
    dense = create_dense(structure).eval()
    example = example_input(structure)
    (macs, params), (dense_macs, dense_params) = count_macs_params(ticket, example), count_macs_params(dense, example)
    metrics = run.level_metrics(level)
    out = Path(output) if output else run.path / f"ticket_level_{level:02d}"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / TICKET_FILE).is_file())):
        raise PracError(f"export output {str(out)!r} exists and is not a structured ticket folder; choose another -o")
    info = {
        **structure, "format_version": FORMAT_VERSION, "package_version": __version__,
        "macs": macs, "params": params, "dense_macs": dense_macs, "dense_params": dense_params,
        "macs_remaining_pct": 100.0 * macs / dense_macs, "params_remaining_pct": 100.0 * params / dense_params,
        "latency": latency_report(dense, ticket, structure["input_size"], batch_sizes, repeats),
        "accuracy": {"val_acc": metrics.get("val_acc"), "test_acc": metrics.get("test_acc")},
        "source": {"run_dir": str(run.path.resolve()), "level": level},
    }
    atomic_save_safetensors(state_to_cpu(ticket), out / WEIGHTS_FILE, {"format": "pt", "level": str(level)})
    atomic_write_json(out / TICKET_FILE, info)  # last: a folder with ticket.json is complete
    return out, info
