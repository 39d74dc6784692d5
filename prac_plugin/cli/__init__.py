"""The ``prac`` command (also ``python -m prac_plugin``)."""

from __future__ import annotations

import argparse
import errno
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from ..version import __version__
from ..errors import PracError
from ..rundir.lock import run_lock


def _cmd_run(args: argparse.Namespace) -> int:
    from ..engine.run_loop import default_output_dir, run_recipe
    from ..config.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    output = args.output or recipe.run.output_dir or default_output_dir(args.recipe)
    run_recipe(recipe, output)  # takes the run folder's lock
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart

    quickstart(args.output)
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from ..config.docs import example, reference

    if args.example and args.what:
        raise PracError("give a section to describe or --example NAME, not both")
    print(example(args.example) if args.example else reference(args.what or ""), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..analysis.compare import write_comparison
    from ..rundir.completed import completed_run
    from ..rundir.report import run_summary, summary_table, write_summary

    if len(args.run_dirs) == 1 and not args.output:  # one run: its own summary
        with run_lock(args.run_dirs[0], read_only=True) as writable:
            run = completed_run(args.run_dirs[0])[0]
            table = write_summary(run, refuse_shorter=True)[1] if writable else summary_table(run_summary(run))
        print(f"## {args.run_dirs[0]}\n\n{table}")
        if not writable:
            print(f"prac: note: {args.run_dirs[0]!r} cannot be written: the table is printed, its summary files are left as they are",
                  file=sys.stderr)
        return 0
    print(write_comparison(args.run_dirs, args.output)[1])
    return 0


def _cmd_sanity(args: argparse.Namespace) -> int:
    from ..analysis.sanity import run_sanity, sanity_markdown

    with run_lock(args.run_dir):
        result = run_sanity(args.run_dir, args.level, args.seeds)
    print(sanity_markdown(result))
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from ..analysis.full_data import full_data_markdown, train_on_full_data

    with run_lock(args.run_dir):
        results = train_on_full_data(args.run_dir, args.level, args.seeds)
    print(full_data_markdown(results), end="")
    return 0


def _cmd_stability(args: argparse.Namespace) -> int:
    from ..analysis.stability import run_stability, stability_text

    with run_lock(args.run_dir):
        result = run_stability(args.run_dir, args.level, args.points, args.recompute_bn, args.start)
    print(stability_text(result))
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from ..engine.run_loop import default_output_dir, run_recipe
    from ..config.recipes import apply_overrides, load_recipe_dict, parse_recipe
    from ..rundir.folder import RunDirectory
    from ..index_files.format import PracIndex
    from .. import registry

    raw = apply_overrides(load_recipe_dict(args.recipe), args.set)
    recipe = parse_recipe(raw)
    final_index = registry.spec("data_selection", recipe.data_selection.strategy).final_index  # a selection's index file
    if final_index is None:
        selecting = [n for n in registry.available("data_selection") if registry.spec("data_selection", n).final_index]
        raise PracError(f"prac select needs data_selection.strategy: {' or '.join(selecting)} (the recipe has {recipe.data_selection.strategy!r})")
    levels_option = registry.get("ticket", recipe.ticket.strategy).traits.levels_option
    if levels_option is None:
        raise PracError(f"prac select needs a ticket strategy with a number of levels to set, such as ltr; "
                        f"ticket.strategy {recipe.ticket.strategy!r} has none")
    # the dense round plus select_rounds pruned rounds: enough for CET and CEP, not the whole ticket search
    recipe = parse_recipe(apply_overrides(raw, [f"ticket.{levels_option}={recipe.data_selection.select_rounds}"]))
    output = args.output or default_output_dir(args.recipe) + "-select"
    run_recipe(recipe, output)  # takes the run folder's lock
    path = str(RunDirectory(output).path / final_index)
    print(f"PrAC index file: {path}")
    _print_description(PracIndex.load(path))
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from .prune_files import prune_file

    previous, pruned = prune_file(args.weights, args.output, args.fraction, args.scope, args.mask, args.model,
                                  args.num_classes, args.in_chans, args.include, args.ignore)
    print(f"{pruned.num_remaining:,} of {pruned.num_total:,} prunable weights remain ({100 * pruned.density:.2f}%; "
          f"{100 * previous.density:.2f}% before), in {len(pruned.masks)} tensors: {args.output}")
    return 0


def _cmd_timm_patch(args: argparse.Namespace) -> int:
    from ..integrations.timm.hook import PATCHES

    print(PATCHES[args.script].read_text(), end="")
    return 0


def _export_hub(args: argparse.Namespace) -> int:
    import tempfile

    from ..integrations.timm.hub_export import export_hub, push
    from ..index_files.publish import check_repo_id

    if args.push:
        check_repo_id(args.push)
    if args.local and not args.push:
        raise PracError("--local DIR writes the folder --push would upload: give --push OWNER/NAME too")
    if not args.push and not args.output:
        raise PracError("--format timm-hub needs -o DIR (the model folder), or --push OWNER/NAME")
    with nullcontext(args.local or args.output) if (args.local or args.output) else tempfile.TemporaryDirectory() as folder:  # complete levels only: no lock
        out, info = export_hub(args.run_dir, args.level, folder, args.push)
        accuracy = f", test accuracy {100 * info['test_acc']:.2f}%" if isinstance(info["test_acc"], (int, float)) else ""
        print(f"Level {info['level']} of {args.run_dir} as a timm model: {info['model']}, {100 * info['density']:.2f}% of the "
              f"prunable weights{accuracy}")
        if args.push and not args.local:
            try:
                name = push(out, args.push, args.overwrite, args.private)
            except PracError:
                raise
            except Exception as exc:  # network, authentication, permissions: huggingface_hub's many error types
                raise PracError(f"uploading to model {args.push!r} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            print(f"Published: {name}")
            print(f'Load it with: timm.create_model("{name}", pretrained=True)')
        else:
            print(f"Wrote {', '.join(sorted(p.name for p in out.iterdir()))} into {out}" + (" (nothing was uploaded)" if args.push else ""))
            print(f'Load it with: timm.create_model("local-dir:{out}", pretrained=True)')
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "timm-hub":
        return _export_hub(args)
    if args.push or args.local:
        raise PracError("--push and --local publish a timm model folder: give --format timm-hub")
    from ..strategies.structured import export_ticket

    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()] if args.batch_sizes else []
    if not batch_sizes or min(batch_sizes) < 1:
        raise PracError(f"--batch-sizes {args.batch_sizes!r} should be positive integers separated by commas, e.g. 1,64")
    with run_lock(args.run_dir) if args.output is None else nullcontext():  # the default output is inside the run
        out, info = export_ticket(args.run_dir, args.level, args.output, batch_sizes, args.repeats)
    print(f"Structured ticket of level {info['source']['level']}: {out}")
    print(f"MACs {info['macs']:,} ({info['macs_remaining_pct']:.1f}% of dense), parameters {info['params']:,} ({info['params_remaining_pct']:.1f}%)")
    latency = info["latency"]
    folded = latency.get("folded", {})
    for batch, row in latency["batches"].items():
        line = f"batch {batch}: {row['ticket_ms']:.2f} ms vs dense {row['dense_ms']:.2f} ms ({row['speedup']:.2f}x, {row['ticket_images_per_s']:.0f} images/s)"
        if batch in folded.get("batches", {}):
            fused = folded["batches"][batch]
            line += f"; BatchNorm folded: {fused['ticket_ms']:.2f} ms vs {fused['dense_ms']:.2f} ms ({fused['speedup']:.2f}x)"
        print(line)
    print(f"(CPU, {latency['threads']} threads, dense and ticket timed alternately, medians of {latency['repeats']} repeats)")
    if "unavailable" in folded:
        print(f"not timed with BatchNorm folded: {folded['unavailable']}")
    print("Load it with: prac_plugin.load_structured_ticket(" + repr(str(out)) + ")")
    return 0


def _index_from_scores(args: argparse.Namespace) -> int:
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
    _print_description(index)
    return 0


def _index_push(args: argparse.Namespace) -> int:
    import tempfile

    from ..index_files.publish import push, stage

    if args.local:
        files = stage(args.file, args.repo_id, Path(args.local), args.path_in_repo)
        print(f"Wrote {', '.join(files)} into {args.local}: the folder `prac index push` uploads (nothing was uploaded)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = push(args.file, args.repo_id, Path(folder), args.path_in_repo, args.overwrite, args.private)
        except PracError:
            raise
        except Exception as exc:  # network, authentication, permissions: huggingface_hub's many error types
            raise PracError(f"uploading to dataset {args.repo_id!r} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    print(f"Published: {path}")
    print(f"Load it with: data_selection: {{strategy: index, path: {path}}}  (or --prac-index {path} in timm's train.py)")
    return 0


def _print_description(index) -> None:
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


def _cmd_index(args: argparse.Namespace) -> int:
    from ..index_files.format import PracIndex, compare

    if args.index_command == "from-scores":
        return _index_from_scores(args)
    if args.index_command == "push":
        return _index_push(args)
    if args.index_command == "inspect":
        _print_description(PracIndex.load(args.file))
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


class _LazyChoices:
    """argparse choices read only when needed (a value given, or the command's help): building the parser reads
    no strategy."""

    def __init__(self, names):
        self._names = names

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, value) -> bool:
        return value in self._names()


def _example_names() -> list[str]:
    from ..config.docs import example_names

    return example_names()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prac", description="Find lottery tickets efficiently on timm models and HF datasets.")
    parser.add_argument("--version", action="version", version=f"prac_plugin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser("quickstart", help="PrAC-LTR next to full-data LTR on the embedded digits, with the steps PrAC "
                                "saved (about a minute on a CPU)")
    quick.add_argument("--output", "-o", default="runs/quickstart", help="folder for both runs and the report (default: runs/quickstart)")
    quick.set_defaults(func=_cmd_quickstart)

    recipe = commands.add_parser("recipe", help="every recipe key with its type, default and help; or a commented starter recipe")
    recipe.add_argument("what", nargs="?", metavar="SECTION", help="a section (train), or a strategy's options (ticket.strategy=cts); default: all")
    example = recipe.add_argument("--example", help="print a commented starter recipe that runs as printed")
    example.choices = _LazyChoices(_example_names)  # set after add_argument, which would read them at once
    recipe.set_defaults(func=_cmd_recipe)

    run = commands.add_parser("run", help="run a recipe (continues an interrupted run in the same output directory)")
    run.add_argument("recipe", help="YAML recipe, e.g. recipes/quickstart.yaml")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    run.add_argument("--output", "-o", help="run directory (default: run.output_dir or runs/<recipe name>)")
    run.set_defaults(func=_cmd_run)

    select = commands.add_parser("select", help="find a PrAC set (dense round + data_selection.select_rounds) and write its index file")
    select.add_argument("recipe", help="YAML recipe with data_selection.strategy: prac")
    select.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    select.add_argument("--output", "-o", help="run directory (default: runs/<recipe name>-select)")
    select.set_defaults(func=_cmd_select)

    index = commands.add_parser("index", help="look at PrAC index files")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    inspect = index_commands.add_parser("inspect", help="size, fraction, class balance and provenance of an index file")
    inspect.add_argument("file")
    inspect.set_defaults(func=_cmd_index)
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
    scores.set_defaults(func=_cmd_index)

    push_cmd = index_commands.add_parser("push", help="publish an index file as a Hugging Face dataset repository, with a card "
                                         "generated from its provenance")
    push_cmd.add_argument("file", metavar="FILE", help="the index file (*.prac.safetensors)")
    push_cmd.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME of the dataset repository (created if missing)")
    push_cmd.add_argument("--path-in-repo", help="the file's path in the repository (default: its file name)")
    push_cmd.add_argument("--local", metavar="DIR", help="write the folder that would be uploaded into DIR instead; upload nothing")
    push_cmd.add_argument("--overwrite", action="store_true", help="replace files the repository already has")
    push_cmd.add_argument("--private", action="store_true", help="create the repository as private")
    push_cmd.set_defaults(func=_cmd_index)

    comp = index_commands.add_parser("compare", help="overlap, Jaccard and per-class differences of two index files")
    comp.add_argument("a")
    comp.add_argument("b")
    comp.set_defaults(func=_cmd_index)

    prune = commands.add_parser("prune", help="the next level's mask: remove a fraction of the remaining weights of trained "
                                "weights by magnitude (as prac run's ltr)")
    prune.add_argument("weights", metavar="WEIGHTS", help="trained weights: .safetensors (the timm hook's weights.safetensors) or a timm checkpoint")
    prune.add_argument("--mask", help="the mask the weights were trained with (its prunable set is kept)")
    prune.add_argument("--model", help="first level, no --mask: the timm model name, to find the Conv/Linear weights")
    prune.add_argument("--num-classes", type=int, help="with --model: classes the model was trained with")
    prune.add_argument("--in-chans", type=int, help="with --model: input channels the model was trained with")
    prune.add_argument("--fraction", type=float, default=0.2, help="of the remaining weights (default 0.2)")
    prune.add_argument("--scope", choices=("global", "layer"), default="global", help="one pool or per tensor (default global)")
    prune.add_argument("--include", nargs="+", default=[], metavar="PATTERN", help="with --model: prune only these (globs)")
    prune.add_argument("--ignore", nargs="+", default=[], metavar="PATTERN", help="with --model: never prune these (globs), e.g. fc")
    prune.add_argument("--output", "-o", required=True, help="the new mask file (must not exist)")
    prune.set_defaults(func=_cmd_prune)

    patch = commands.add_parser("timm-patch", help="print the lines to add to timm's train.py, as a patch: prac timm-patch | patch train.py")
    patch.add_argument("--script", choices=("current", "v1.0.22"), default="current",
                       help="current: the task-based train.py of timm 1.0.23 and later (default); v1.0.22: the earlier loop")
    patch.set_defaults(func=_cmd_timm_patch)

    export = commands.add_parser("export", help="write a structured ticket as a compact timm model (weights, pruning history, MACs, "
                                 "latency), or with --format timm-hub any run's ticket as a timm Hub model folder")
    export.add_argument("run_dir", metavar="RUN_DIR", help="run directory (structured: a ticket.strategy: structured run)")
    export.add_argument("--level", type=int, default=None, help="level to export (default: the last completed)")
    export.add_argument("--output", "-o", help="output folder (default: RUN_DIR/ticket_level_NN; timm-hub: required unless --push)")
    export.add_argument("--format", choices=("structured", "timm-hub"), default="structured",
                        help="structured: the compact model (default); timm-hub: config.json, model.safetensors, the mask and a "
                        "model card, loadable with timm.create_model('local-dir:DIR', pretrained=True)")
    export.add_argument("--push", metavar="OWNER/NAME", help="timm-hub: upload the folder to this Hugging Face model repository")
    export.add_argument("--local", metavar="DIR", help="with --push: write the folder that would be uploaded into DIR; upload nothing")
    export.add_argument("--overwrite", action="store_true", help="with --push: replace files the repository already has")
    export.add_argument("--private", action="store_true", help="with --push: create the repository as private")
    export.add_argument("--batch-sizes", default="1,64", help="batch sizes to time on the CPU (default: 1,64)")
    export.add_argument("--repeats", type=int, default=30, help="timed repeats per model and batch size (default: 30)")
    export.set_defaults(func=_cmd_export)

    report = commands.add_parser("report", help="one run: re-print its table and redraw its plot; several: compare them")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--output", "-o", help="folder for report.{md,csv,json,png} (default: report/ beside the runs)")
    report.set_defaults(func=_cmd_report)

    sanity = commands.add_parser("sanity", help="retrain a level's ticket against random, shuffled, re-initialized and inverted variants")
    sanity.add_argument("run_dir", metavar="RUN_DIR")
    sanity.add_argument("--level", type=int, help="a completed level of 1 or more (default: the last)")
    sanity.add_argument("--seeds", type=int, default=2, help="data-order seeds per variant (default 2; 1 gives no noise estimate)")
    sanity.set_defaults(func=_cmd_sanity)

    retrain = commands.add_parser("retrain", help="train levels' tickets (mask + rewind weights) on the full training split, "
                                  "as the PrAC paper measures tickets found on a subset")
    retrain.add_argument("run_dir", metavar="RUN_DIR", help="run directory of a ticket.strategy: ltr run")
    retrain.add_argument("--level", type=int, nargs="+", help="completed levels of 1 or more (default: all)")
    retrain.add_argument("--seeds", type=int, default=1, help="data-order seeds per level (default 1)")
    retrain.set_defaults(func=_cmd_retrain)

    stability = commands.add_parser("stability", help="linear mode connectivity of a level's ticket: error along the path, barrier")
    stability.add_argument("run_dir", metavar="RUN_DIR")
    stability.add_argument("--level", type=int, help="a completed level (default: the last)")
    stability.add_argument("--points", type=int, default=11, help="points along the interpolation, endpoints included (default 11)")
    stability.add_argument("--recompute-bn", action="store_true", help="recompute BatchNorm statistics on the training split at each point")
    stability.add_argument("--start", choices=("rewind", "init"), default="rewind", help="where both copies start (default: rewind)")
    stability.set_defaults(func=_cmd_stability)
    return parser


# arguments that name a file or folder: an empty one would silently mean the current folder or a default
PATH_ARGUMENTS = ("recipe", "output", "run_dir", "run_dirs", "file", "a", "b", "weights", "mask", "scores", "local")
RESUMING_COMMANDS = ("run", "select", "quickstart")
MAX_MESSAGE = 2000  # characters of one error line; values in messages are cut where they are worded


def _check_paths(args: argparse.Namespace) -> None:
    for name in PATH_ARGUMENTS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not value.strip():
                flag = f"--{name}" if name in ("output", "mask", "local") else {"run_dirs": "RUN_DIR"}.get(name, name.upper())
                raise PracError(f"{flag} is an empty path {value!r}; give a file or folder name")


def _one_line(message: str) -> str:
    message = message.replace("\n", "\\n")  # one line, whatever a value held
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 200] + " ... " + message[-195:]


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that its line starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_paths(args)
        return args.func(args)
    except PracError as exc:
        _end_progress_bars()
        print("prac: error: " + _one_line(str(exc)), file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only, foreign or full output location is the user's to fix, not a bug
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        _end_progress_bars()
        where = f" {exc.filename!r}" if exc.filename is not None else ""
        advice = ("free some space or choose an output folder on another disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "choose an output folder you can write to")
        print(f"prac: error: cannot write{where}: {exc.strerror}; {advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        if args.command in RESUMING_COMMANDS:
            print("prac: interrupted; re-run the same command to continue: completed levels are kept and the running level "
                  "resumes from its newest checkpoint (from its start without one)", file=sys.stderr)
        else:
            print("prac: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
