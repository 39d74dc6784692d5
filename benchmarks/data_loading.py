"""Loading CIFAR-10 (60,000 JPEGs) into memory: first load (decode) vs later loads (decoded-image cache).

Both in the same process, against a fresh temporary cache folder.

    python benchmarks/data_loading.py [--data ../shared/data/cifar10-jpeg]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg")
    args = parser.parse_args()
    os.environ["PRAC_CACHE"] = tempfile.mkdtemp(prefix="prac-cache-")
    from prac_plugin.config.schema import from_dict
    from prac_plugin.data.sources import load_data
    from prac_plugin.config.recipes import DataSection

    cfg = from_dict(DataSection, {"path": "parquet", "data_files": {"train": f"{args.data}/train.parquet", "test": f"{args.data}/test.parquet"}}, "data")
    load_data(cfg)  # warms datasets' own arrow cache, which both measurements then share
    import shutil

    shutil.rmtree(os.environ["PRAC_CACHE"])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        bundle = load_data(cfg)
        times.append(time.perf_counter() - started)
    print(f"CIFAR-10 {bundle.info['sizes']}: first load (decode + cache write) {times[0]:.2f} s, "
          f"cached loads {times[1]:.2f} s and {times[2]:.2f} s: {times[0] / min(times[1:]):.1f}x faster")


if __name__ == "__main__":
    main()
