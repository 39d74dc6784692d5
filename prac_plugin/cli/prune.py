"""``prac prune``: the next level's mask from trained weights, by magnitude (the helper: `prune_files`)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("prune", help="the next level's mask: remove a fraction of the remaining weights of trained "
                                 "weights by magnitude (as prac run's ltr)")
    parser.add_argument("weights", metavar="WEIGHTS", help="trained weights: .safetensors (the timm hook's weights.safetensors) or a timm checkpoint")
    parser.add_argument("--mask", help="the mask the weights were trained with (its prunable set is kept)")
    parser.add_argument("--model", help="first level, no --mask: the timm model name, to find the Conv/Linear weights")
    parser.add_argument("--num-classes", type=int, help="with --model: classes the model was trained with")
    parser.add_argument("--in-chans", type=int, help="with --model: input channels the model was trained with")
    parser.add_argument("--fraction", type=float, default=0.2, help="of the remaining weights (default 0.2)")
    parser.add_argument("--scope", choices=("global", "layer"), default="global", help="one pool or per tensor (default global)")
    parser.add_argument("--include", nargs="+", default=[], metavar="PATTERN", help="with --model: prune only these (globs)")
    parser.add_argument("--ignore", nargs="+", default=[], metavar="PATTERN", help="with --model: never prune these (globs), e.g. fc")
    parser.add_argument("--output", "-o", required=True, help="the new mask file (must not exist)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .prune_files import prune_file

    previous, pruned = prune_file(args.weights, args.output, args.fraction, args.scope, args.mask, args.model,
                                  args.num_classes, args.in_chans, args.include, args.ignore)
    print(f"{pruned.num_remaining:,} of {pruned.num_total:,} prunable weights remain ({100 * pruned.density:.2f}%; "
          f"{100 * previous.density:.2f}% before), in {len(pruned.masks)} tensors: {args.output}")
    return 0
