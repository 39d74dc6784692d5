"""``prac index``: PrAC index files: inspect one, compare two, make one from published scores, publish one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PracError


def add_parser(commands) -> None:
    index = commands.add_parser("index", help="look at PrAC index files")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    inspect = index_commands.add_parser("inspect", help="size, fraction, class balance and provenance of an index file")
    inspect.add_argument("file")
    inspect.set_defaults(func=run)
    _add_from_scores(index_commands)
    _add_push(index_commands)
    comp = index_commands.add_parser("compare", help="overlap, Jaccard and per-class differences of two index files")
    comp.add_argument("a")
    comp.add_argument("b")
    comp.set_defaults(func=run)


def _add_from_scores(index_commands) -> None:
    scores = index_commands.add_parser("from-scores", help="an index file from published per-example scores (C-scores, EL2N, "
                                       "forgetting, memorization: .npz, .npy or .csv)")
    scores.add_argument("scores", metavar="SCORES", help="the scores file (.npz with scores/labels arrays, .npy, .csv/.tsv with columns)")
    scores.add_argument("--dataset", required=True, help="as data.path: a Hub id, a builder (parquet), a folder, builtin:digits")
    scores.add_argument("--name", help="dataset configuration")
    scores.add_argument("--data-files", help="as data.data_files (YAML), e.g. '{train: train.parquet}'")
    scores.add_argument("--revision", help="Hub revision")
    scores.add_argument("--cache-dir", help="datasets' cache folder")
    scores.add_argument("--split", default="train", help="the split the scores are for (default: train)")
    scores.add_argument("--label-column", help="the dataset's label column (default: detected)")
    scores.add_argument("--score-key", default="scores", help="array or column of the scores (default: scores)")
    scores.add_argument("--label-key", default="labels", help="array or column of the labels, checked against the dataset's (default: labels)")
    scores.add_argument("--id-key", help="array or column of row numbers in the split (default: match by position)")
    scores.add_argument("--keep", required=True, help="top:50%%, bottom:30%%, top:1000, above:0.8 or below:0.2")
    scores.add_argument("--output", "-o", required=True, help="the new index file (*.prac.safetensors)")
    scores.set_defaults(func=run)


def _add_push(index_commands) -> None:
    push_cmd = index_commands.add_parser("push", help="publish an index file as a Hugging Face dataset repository, with a card "
                                         "generated from its provenance")
    push_cmd.add_argument("file", metavar="FILE", help="the index file (*.prac.safetensors)")
    push_cmd.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME of the dataset repository (created if missing)")
    push_cmd.add_argument("--path-in-repo", help="the file's path in the repository (default: its file name)")
    push_cmd.add_argument("--local", metavar="DIR", help="write the folder that would be uploaded into DIR instead; upload nothing")
    push_cmd.add_argument("--overwrite", action="store_true", help="replace files the repository already has")
    push_cmd.add_argument("--private", action="store_true", help="create the repository as private")
    push_cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index_files.format import PracIndex, compare

    if args.index_command == "from-scores":
        return _from_scores(args)
    if args.index_command == "push":
        return _push(args)
    if args.index_command == "inspect":
        print_description(PracIndex.load(args.file))
        return 0
    a, b = PracIndex.load(args.a), PracIndex.load(args.b)
    result = compare(a, b)
    print(f"A: {result['size_a']} rows, B: {result['size_b']} rows, both: {result['overlap']}, "
          f"only A: {result['only_a']}, only B: {result['only_b']}, Jaccard: {result['jaccard']:.4f}")
    if result["same_dataset"] is False:
        print(f"warning: the files name different datasets or label hashes ({result['dataset_difference']})")
    print("| class | A | B | both | B - A |")
    print("|---:|---:|---:|---:|---:|")
    for label, row in result["per_class"].items():
        print(f"| {label} | {row['a']} | {row['b']} | {row['both']} | {row['b'] - row['a']:+d} |")
    return 0


def print_description(index) -> None:
    """An index file's size, class balance, statistics, format and provenance (``prac index inspect``, ``prac select``)."""
    from ..index_files.format import describe

    info = describe(index)
    names = info["class_names"]
    fraction = f" ({100 * info['fraction']:.1f}% of {info['num_rows']} rows)" if info["fraction"] is not None else ""
    print(f"size: {info['size']}{fraction}")
    print("class balance: " + ", ".join(f"{names[c] if c < len(names) else c}={n}" for c, n in info["class_counts"].items()))
    print("statistics: " + (", ".join(info["statistics"]) or "none"))
    if info["content_sha256"]:
        print(f"format: version {info['format_version']}, content SHA-256 verified")
    elif info["format_version"] < 2:  # files written before checksums load with every other check; say what is missing
        print(f"format: version {info['format_version']} (no content checksum; save it again to add one)")
    for key, value in info["provenance"].items():
        print(f"{key}: {value}")


def _from_scores(args: argparse.Namespace) -> int:
    import yaml

    from ..data.sources import split_identity
    from ..config.recipes import DataSection
    from ..index_files.scores import index_from_scores, read_scores

    if not args.output.endswith(".prac.safetensors"):
        raise PracError(f"--output {args.output!r} should end with .prac.safetensors")
    if Path(args.output).exists():
        raise PracError(f"--output {args.output!r} exists; choose a new file")
    scores = read_scores(args.scores, args.score_key, args.label_key, args.id_key)  # before the dataset: fail fast
    try:
        data_files = yaml.safe_load(args.data_files) if args.data_files else None
    except yaml.YAMLError:
        raise PracError(f"--data-files {args.data_files!r} is not valid YAML (e.g. '{{train: a.parquet}}' or a path)") from None
    cfg = DataSection(path=args.dataset, name=args.name, data_files=data_files, revision=args.revision,
                      cache_dir=args.cache_dir, train_split=args.split, label_column=args.label_column)
    signature, labels, names = split_identity(cfg)
    index = index_from_scores(scores, signature, labels, args.keep, args.scores, names)
    index.save(args.output)
    print(f"PrAC index file: {args.output}")
    print_description(index)
    return 0


def _push(args: argparse.Namespace) -> int:
    import tempfile

    from ..index_files.publish import push, stage, upload_errors

    if args.local:
        files = stage(args.file, args.repo_id, Path(args.local), args.path_in_repo)
        print(f"Wrote {', '.join(files)} into {args.local}: the folder `prac index push` uploads (nothing was uploaded)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        with upload_errors("dataset", args.repo_id):
            path = push(args.file, args.repo_id, Path(folder), args.path_in_repo, args.overwrite, args.private)
    print(f"Published: {path}")
    print(f"Load it with: data_selection: {{strategy: index, path: {path}}}  (or --prac-index {path} in timm's train.py)")
    return 0
