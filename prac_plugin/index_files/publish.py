"""``prac index push``: an index file published as a Hugging Face dataset repository with a generated card.

The folder that goes up holds the index file and ``README.md``, a dataset card written from the file's provenance
(dataset, split, revision, hashes, the model and density it was selected with, thresholds, size and class
balance, package version) and the lines that load it back through ``hf://datasets/<repo>/<file>``. ``--local DIR``
writes exactly that folder and uploads nothing. A file the repository already holds is replaced only when asked.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import yaml

from ..errors import PracError
from .format import PracIndex, describe

_SHOWN = (  # provenance worth a line on the card, in this order, where the file has it
    ("dataset", "dataset"), ("dataset_config", "configuration"), ("split", "split"), ("dataset_revision", "revision"),
    ("num_rows", "rows in the split"), ("label_column", "label column"), ("labels_sha256", "SHA-256 of the labels"),
    ("features_sha256", "SHA-256 of the feature schema"), ("model", "selected with model"),
    ("weight_density", "weight density of that model"), ("criteria", "criteria"), ("forgetting_threshold", "forgetting threshold E_F"),
    ("val_fraction", "validation fraction held out"), ("split_seed", "validation split seed"), ("scores_file", "scores file"),
    ("scores_sha256", "SHA-256 of the scores"), ("created_by", "created by"), ("package_version", "prac_plugin version"),
)


def dataset_card(index: PracIndex, repo_id: str, path_in_repo: str) -> str:
    """The README.md of the repository: YAML front matter, what the set is, its provenance and how to load it."""
    info = describe(index)
    meta = index.metadata
    names = info["class_names"]
    hf_path = f"hf://datasets/{repo_id}/{path_in_repo}"
    front = {"tags": ["prac-plugin", "lottery-ticket", "data-subset", "pruning-aware-critical-set"], "pretty_name": f"PrAC set of {meta.get('dataset')}"}
    share = f" ({100 * info['fraction']:.1f}% of {info['num_rows']:,} rows)" if info["fraction"] is not None else ""
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# PrAC set: {info['size']:,} rows of {meta.get('dataset')} split {meta.get('split')}{share}", "",
             "A subset of a training split, as an index file of prac_plugin: the sorted row "
             "numbers of the set in the source split, per-row statistics and the metadata below. Training (and pruning) on it "
             "instead of the whole split is PrAC data selection (Zhang et al., ICML 2021). Loading it checks the dataset's row count "
             "and label and schema hashes: it refuses another dataset, split or order.", "",
             "## Load it", "", "In a `prac` recipe:", "", "```yaml", f"data_selection: {{strategy: index, path: {hf_path}}}", "```", "",
             "With timm's `train.py` and the prac_plugin hook:", "", "```bash", f"python train.py ... --prac-index {hf_path}", "```", "",
             "In Python:", "", "```python", "from prac_plugin.index_files.format import PracIndex",
             f"index = PracIndex.load(\"{hf_path}\")  # index.rows, index.statistics, index.metadata", "```", "",
             "## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {label} | `{meta[key]}` |" for key, label in _SHOWN if key in meta and meta[key] not in ("", "None")]
    lines += [f"| set size | {info['size']:,} |", f"| per-row statistics | {', '.join(info['statistics']) or 'none'} |", "",
              "## Class balance", "", "| class | rows |", "|---|---:|"]
    lines += [f"| {names[c] if c < len(names) else c} | {n:,} |" for c, n in info["class_counts"].items()]
    lines += ["", f"File: `{path_in_repo}`. Metadata as JSON:", "", "```json", json.dumps(meta, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def check_repo_id(repo_id: str) -> None:
    """A Hub model or dataset id a push can use (OWNER/NAME), or one `PracError` saying what is wrong with it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PracError(f"repository id {repo_id!r} is not valid: {str(exc).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise PracError(f"repository id {repo_id!r} should name an owner too: OWNER/NAME")


def stage(index_path: str, repo_id: str, folder: Path, path_in_repo: Optional[str] = None) -> list[str]:
    """Write the repository's files (the index file and its card) into ``folder``; returns their paths in the repo."""
    check_repo_id(repo_id)
    index = PracIndex.load(index_path)
    path_in_repo = path_in_repo or Path(index_path).name
    if not path_in_repo.endswith(".prac.safetensors") or path_in_repo.startswith("/") or ".." in Path(path_in_repo).parts:
        raise PracError(f"--path-in-repo {path_in_repo!r} should be a relative path ending with .prac.safetensors")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise PracError(f"{str(folder)!r} is not empty; give a new or empty folder")
    (folder / path_in_repo).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(index_path, folder / path_in_repo)
    (folder / "README.md").write_text(dataset_card(index, repo_id, path_in_repo))
    return ["README.md", path_in_repo]


def push(index_path: str, repo_id: str, folder: Path, path_in_repo: Optional[str] = None, overwrite: bool = False,
         private: bool = False, api=None) -> str:
    """Stage the files in ``folder`` and upload them to the dataset repository ``repo_id``; returns the hf:// path."""
    from huggingface_hub import HfApi

    files = stage(index_path, repo_id, folder, path_in_repo)
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
    if not overwrite:
        held = [name for name in files if api.file_exists(repo_id, name, repo_type="dataset")]
        if held:
            raise PracError(f"dataset {repo_id!r} already has {held[0]!r}; give --path-in-repo another name, or --overwrite to replace it")
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset",
                      commit_message=f"PrAC index file {files[1]} (prac index push)")
    return f"hf://datasets/{repo_id}/{files[1]}"


@contextmanager
def upload_errors(kind: str, repo_id: str) -> Iterator[None]:
    """An upload's failure (network, authentication, permissions: huggingface_hub's many error types) as one
    `PracError` naming the repository; the package's own errors pass unchanged."""
    try:
        yield
    except PracError:
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise PracError(f"uploading to {kind} {repo_id!r} failed: {type(exc).__name__}: {first_line}") from None
