"""``prac export RUN --format timm-hub``: a level's ticket as a timm model folder, in the layout timm shares on the Hub.

The folder holds what ``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``"hf-hub:OWNER/NAME"`` once
pushed) reads: ``config.json`` (the architecture, ``num_classes``, the model arguments and ``pretrained_cfg`` with
the run's input size and normalization) and ``model.safetensors``, both written by timm's own ``save_for_hf``. Beside
them: ``mask.safetensors`` (the ticket's mask, `TicketMask`'s format) and ``README.md``, a model card with the
sparsity, accuracy, optimizer steps, recipe and provenance. ``--push OWNER/NAME`` uploads the folder with
huggingface_hub, as ``prac index push`` uploads an index file: ``--local DIR`` writes exactly what would go up and
uploads nothing, and a file the repository already holds is replaced only with ``--overwrite``.

Structured tickets change the architecture, so they keep their own export (``prac export``'s default format).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ...version import __version__
from ...errors import PracError
from ...tickets.masks import TicketMask
from ... import registry
from ...rundir.folder import MASK_FILE, RunDirectory

WEIGHTS = "model.safetensors"
FILES = ("config.json", WEIGHTS, MASK_FILE, "README.md")


def _shapes_match(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return own.keys() == weights.keys() and all(own[k].shape == weights[k].shape for k in own)


def rebuild_model(name: str, kwargs: dict, weights: dict[str, torch.Tensor], num_classes: Optional[int] = None,
                  in_chans: Optional[int] = None) -> tuple[torch.nn.Module, dict]:
    """The timm model ``name`` the weights belong to, and the ``create_model`` arguments that rebuild it: classes and
    input channels from the recipe or the run's metrics, else read off the weights' shapes."""
    import timm

    from ...models import lth as models_lth  # noqa: F401  (the LTH architectures, for runs that used them)

    if not timm.is_model(name):
        raise PracError(f"the run's model {name!r} is not in timm's registry")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_chans")}
    if num_classes is None:
        probe = timm.create_model(name, **kwargs)
        classifier = probe.pretrained_cfg.get("classifier") or "fc"
        key = f"{classifier}.weight"
        if key not in weights:
            raise PracError(f"cannot tell the number of classes: the weights have no {key!r}; set model.num_classes in the recipe")
        num_classes = int(weights[key].shape[0])
    for channels in dict.fromkeys([in_chans] if in_chans else [3, 1, 4, 2]):
        args = {**kwargs, "num_classes": num_classes, "in_chans": channels}
        model = timm.create_model(name, **args)
        if _shapes_match(model, weights):
            model.load_state_dict(weights)
            return model.eval(), args
    raise PracError(f"the level's weights do not fit {name!r} with {kwargs} and {num_classes} classes: not this run's weights")


def model_card(repo_id: Optional[str], name: str, args: dict, mask: TicketMask, metrics: dict, steps: dict, recipe: dict,
               provenance: dict) -> str:
    """README.md of the model folder: front matter as timm's cards have it, then what the ticket is and how to load it."""
    hub = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    front = {"tags": ["image-classification", "timm", "lottery-ticket", "pruned", "prac-plugin"], "library_name": "timm",
             "pipeline_tag": "image-classification"}
    sparsity = 100.0 * (1.0 - mask.density)
    accuracy = [f"| {label} | {100 * metrics[key]:.2f}% |" for key, label in (("test_acc", "test accuracy"), ("val_acc", "validation accuracy"))
                if isinstance(metrics.get(key), (int, float))]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# Lottery ticket: {name}, {sparsity:.2f}% of its prunable weights removed", "",
             f"A sparse `{name}` found by prac_plugin ({provenance['strategy']}, level {provenance['level']}): "
             f"{mask.num_remaining:,} of {mask.num_total:,} prunable weights remain, the others are exactly zero in "
             f"`{WEIGHTS}`. `{MASK_FILE}` says which (True: kept), tensor by tensor.", "",
             "## Load it", "", "```python", "import timm", "",
             f"model = timm.create_model(\"{hub}\", pretrained=True)  # config.json + {WEIGHTS}", "```", "",
             "The mask, to keep pruned weights at zero when fine-tuning (`prac_plugin.TicketMask`):", "", "```python",
             "from prac_plugin import MaskEnforcer, TicketMask", "",
             f"mask = TicketMask.load(\"{MASK_FILE}\", model)", "MaskEnforcer(model, mask).hook_gradients()", "```", "",
             "## Ticket", "", "| | |", "|---|---|",
             f"| architecture | `{name}` |", f"| create_model arguments | `{json.dumps(args, sort_keys=True)}` |",
             f"| sparsity | {sparsity:.2f}% of {mask.num_total:,} prunable weights |",
             f"| weights remaining | {mask.num_remaining:,} ({100 * mask.density:.2f}%) |",
             *accuracy,
             f"| optimizer steps, this level | {steps['level']:,} |",
             f"| optimizer steps, levels 0 to {provenance['level']} | {steps['cumulative']:,} |",
             f"| training examples per epoch | {metrics.get('train_examples', 'unknown')} |", "",
             "Per-tensor density:", "", "| tensor | kept | of | density |", "|---|---:|---:|---:|"]
    lines += [f"| `{layer['name']}` | {layer['remaining']:,} | {layer['total']:,} | {layer['density']:.4f} |" for layer in metrics.get("layers", [])]
    lines += ["", "## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | `{value}` |" for key, value in provenance.items() if value not in (None, "")]
    lines += ["", "## Recipe", "", "The resolved `prac` recipe the run used (`prac run` reproduces it):", "", "```yaml",
              yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def _changes_architecture(strategy) -> bool:
    """Whether the run's ticket strategy declares its tickets smaller architectures (not installed here: no)."""
    try:
        return isinstance(strategy, str) and registry.spec("ticket", strategy).traits.changes_architecture
    except PracError:
        return False


def export_hub(run_path: str | Path, level: Optional[int], output: str | Path, repo_id: Optional[str] = None) -> tuple[Path, dict]:
    """Write level ``level`` (default: the last completed) of a run as a timm model folder ``output``; returns the
    folder and a summary. ``repo_id`` only names the repository in the card's loading lines."""
    from timm.models import save_for_hf

    where = str(run_path)
    run = RunDirectory.existing(run_path)
    level = run.chosen_level(level, where)
    recipe = run.recipe()
    strategy = (recipe.get("ticket") or {}).get("strategy")
    if _changes_architecture(strategy):
        raise PracError(f"run {where!r} is a structured ticket (its architecture shrank): export it with `prac export` "
                        "(format structured), which writes the compact model")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PracError(f"export output {str(out)!r} exists and is not empty; give a new or empty folder")
    metrics = run.level_metrics(level)
    model_cfg = recipe.get("model") or {}
    size = metrics.get("input_size")
    name, kwargs = model_cfg.get("name"), dict(model_cfg.get("kwargs") or {})
    weights = run.level_weights(level)
    model, args = rebuild_model(name, kwargs, weights, model_cfg.get("num_classes") or metrics.get("num_classes"),
                                model_cfg.get("in_chans") or (size[0] if size else None))
    mask = TicketMask.load(run.mask_path(level), model)
    state = model.state_dict()
    for tensor, keep in mask.masks.items():
        if torch.count_nonzero(state[tensor][~keep]):
            raise PracError(f"level {level}'s weights have nonzero pruned entries in {tensor!r}: not the level's masked weights")
    data_config: dict[str, Any] = {"crop_pct": 1.0, "crop_mode": "center"}  # the run evaluates whole images, unresized
    if size:
        data_config["input_size"] = tuple(int(v) for v in size)
    normalization = metrics.get("normalization") or {}
    if normalization.get("mean") and normalization.get("std"):
        data_config.update(mean=tuple(normalization["mean"]), std=tuple(normalization["std"]))
    out.mkdir(parents=True, exist_ok=True)
    save_for_hf(model, str(out), model_args=args, safe_serialization=True, data_config=data_config)
    mask.save(out / MASK_FILE, {"level": str(level), "density": f"{mask.density:.6f}"})
    steps = {"level": int(metrics.get("optimizer_steps", 0)),
             "cumulative": sum(int(run.level_metrics(lv).get("optimizer_steps", 0)) for lv in run.completed_levels() if lv <= level)}
    data = recipe.get("data") or {}
    provenance = {"strategy": strategy, "data_selection": (recipe.get("data_selection") or {}).get("strategy"), "level": level,
                  "dataset": data.get("path"), "train_split": data.get("train_split"), "run_dir": str(run.path.resolve()),
                  "package_version": __version__, "created_by": "prac export --format timm-hub"}
    (out / "README.md").write_text(model_card(repo_id, name, args, mask, metrics, steps, recipe, provenance))
    summary = {"level": level, "model": name, "args": args, "density": mask.density, "test_acc": metrics.get("test_acc"),
               "val_acc": metrics.get("val_acc"), "steps": steps}
    return out, summary


def push(folder: Path, repo_id: str, overwrite: bool = False, private: bool = False, api=None) -> str:
    """Upload an exported folder to the model repository ``repo_id``; returns the name timm loads it by."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    files = sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    if not overwrite:
        held = [name for name in files if api.file_exists(repo_id, name, repo_type="model")]
        if held:
            raise PracError(f"model {repo_id!r} already has {held[0]!r}; give another repository, or --overwrite to replace it")
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      commit_message="Lottery ticket (prac export --format timm-hub)")
    return f"hf-hub:{repo_id}"
