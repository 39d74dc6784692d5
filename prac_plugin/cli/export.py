"""``prac export``: a structured ticket as a compact timm model (weights, pruning history, MACs, latency), or with
``--format timm-hub`` any run's ticket as a timm Hub model folder (optionally published)."""

from __future__ import annotations

import argparse
from contextlib import nullcontext

from ..errors import PracError


def add_parser(commands) -> None:
    parser = commands.add_parser("export", help="write a structured ticket as a compact timm model (weights, pruning history, MACs, "
                                 "latency), or with --format timm-hub any run's ticket as a timm Hub model folder")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (structured: a ticket.strategy: structured run)")
    parser.add_argument("--level", type=int, default=None, help="level to export (default: the last completed)")
    parser.add_argument("--output", "-o", help="output folder (default: RUN_DIR/ticket_level_NN; timm-hub: required unless --push)")
    parser.add_argument("--format", choices=("structured", "timm-hub"), default="structured",
                        help="structured: the compact model (default); timm-hub: config.json, model.safetensors, the mask and a "
                        "model card, loadable with timm.create_model('local-dir:DIR', pretrained=True)")
    parser.add_argument("--push", metavar="OWNER/NAME", help="timm-hub: upload the folder to this Hugging Face model repository")
    parser.add_argument("--local", metavar="DIR", help="with --push: write the folder that would be uploaded into DIR; upload nothing")
    parser.add_argument("--overwrite", action="store_true", help="with --push: replace files the repository already has")
    parser.add_argument("--private", action="store_true", help="with --push: create the repository as private")
    parser.add_argument("--batch-sizes", default="1,64", help="batch sizes to time on the CPU (default: 1,64)")
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per model and batch size (default: 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "timm-hub":
        return _export_hub(args)
    if args.push or args.local:
        raise PracError("--push and --local publish a timm model folder: give --format timm-hub")
    return _export_structured(args)


def _export_structured(args: argparse.Namespace) -> int:
    from ..rundir.lock import run_lock
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


def _export_hub(args: argparse.Namespace) -> int:
    import tempfile

    from ..integrations.timm.hub_export import export_hub, push
    from ..index_files.publish import check_repo_id, upload_errors

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
            with upload_errors("model", args.push):
                name = push(out, args.push, args.overwrite, args.private)
            print(f"Published: {name}")
            print(f'Load it with: timm.create_model("{name}", pretrained=True)')
        else:
            print(f"Wrote {', '.join(sorted(p.name for p in out.iterdir()))} into {out}" + (" (nothing was uploaded)" if args.push else ""))
            print(f'Load it with: timm.create_model("local-dir:{out}", pretrained=True)')
    return 0
