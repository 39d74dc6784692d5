"""CTS vs LTR at extreme sparsity in the paper's setting: cifar_resnet20 on CIFAR-10 (a GPU benchmark).

The recipe is `recipes/cifar10_resnet20_ltr.yaml` (open_lth's schedule: 160 epochs, batch 128, SGD 0.1,
x0.1 at 80 and 120), every conv and the classifier prunable, both methods rewinding to epoch 9 (CTS searches
there), as in the paper. LTR prunes 20% per level for 24 levels; CTS searches the densities LTR reaches at
levels 19, 22 and 24 (98.56%, 99.26%, 99.53% sparsity). Target: at 99.3% sparsity CTS at least as accurate
as LTR for at most 1/8 of its compute. The data is the JPEG copy of CIFAR-10 (see the recipe): compare
accuracies between methods, not with published absolute numbers.

    python benchmarks/cts_vs_ltr_cifar10.py --output runs/bench_cts_cifar10 --set train.mixed_precision=bf16
    # a shorter schedule for a first look (the search keeps its own length, 20 epochs at batch 512):
    python benchmarks/cts_vs_ltr_cifar10.py --set train.epochs=40 train.milestones=[20,30] --rewind 2ep
"""

from __future__ import annotations

from cts_vs_ltr_fashion_mnist import ROOT, arguments, compare


def main() -> None:
    parser = arguments("runs/bench_cts_cifar10", "9ep")  # the paper rewinds ResNet-20 to epoch 9 of 160
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, as prac run --set")
    args = parser.parse_args()
    compare(ROOT / "recipes" / "cifar10_resnet20_ltr.yaml", args.set + ["run.tracker=none"], [], args.output, args.seed, args.rewind, args.search_epochs)


if __name__ == "__main__":
    main()
