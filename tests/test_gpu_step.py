"""benchmarks/gpu_step.py, the eager-vs-captured measurement for the next GPU lease: its dry run takes the whole
code path on a CPU (every variant, the two-call timing, the profiler difference, the JSON and the table), so the
script does not first fail on the GPU."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_step  # noqa: E402


def test_the_dry_run_measures_every_variant_and_writes_json_and_markdown(tmp_path):
    out = tmp_path / "out"
    assert gpu_step.main(["--dry-run", "--output", str(out)]) == 0
    record = json.loads((out / "gpu_step.json").read_text())
    assert record["dry_run"] is True and set(record["variants"]) == set(gpu_step.VARIANTS)
    for name, (overrides, captured) in gpu_step.VARIANTS.items():
        variant = record["variants"][name]
        assert variant["status"] == "ok", variant.get("traceback")
        # the steady epoch is a difference of two timed calls (2 epochs less 1): on a loaded CPU the shorter call can
        # take longer, so its sign is the machine's; the calls and the arithmetic are the script's
        (repeat,) = variant["repeats"]
        assert repeat["first_epoch_s"] > 0 and repeat["epochs_call_s"] > 0 and variant["epochs_timed"] == 1
        assert variant["seconds_per_epoch"] == pytest.approx(repeat["epochs_call_s"] - repeat["first_epoch_s"])
        assert variant["images_per_s"] == pytest.approx(variant["train_examples"] / variant["seconds_per_epoch"])
        # the captured variants ran the captured step's function (uncaptured on a CPU), the eager ones the eager loop
        assert ("without capture" in variant["cuda_graphs"]["reason"]) is captured, variant["cuda_graphs"]
        assert ("train.channels_last=true" in variant["overrides"]) is ("channels_last" in name)
        profile = variant["profile"]
        assert profile["profiled_steps"] == 2 and profile["cpu_ops_per_step"] > 0
        assert profile["kernel_ms_per_step"] == 0 and profile["launches_per_step"] == 0  # no CUDA here
    table = (out / "gpu_step.md").read_text()
    assert "DRY RUN" in table and all(re.search(rf"^\| {name} \| False \|", table, re.M) for name in gpu_step.VARIANTS)


def test_a_measurement_needs_a_gpu_and_data(tmp_path, capsys):
    if gpu_step.torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal is for machines without one")
    with pytest.raises(SystemExit):
        gpu_step.main(["--data", str(tmp_path), "--output", str(tmp_path / "out")])
    assert "use --dry-run on a CPU" in capsys.readouterr().err


def test_the_docstring_gives_the_gpu_command():
    doc = gpu_step.__doc__
    assert "benchmarks/gpu_step.py --data .gpu_stage/data --output $OUT/gpu_step --tests" in doc
    assert "gpu_prepare.sh" in doc and "--dry-run" in doc


def test_the_streams_measurement_runs_its_three_arrangements_on_a_cpu(tmp_path):
    """benchmarks/gpu_streams.py, ready for the next GPU lease: its dry run (tiny, uncaptured, two processes)
    measures one run alone, two in one process and two processes, and writes its figures."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_streams.py"), "--dry-run", "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_streams.json").read_text())
    assert record["captured"] is False and record["runs"] == 2
    assert all(record[f"{k}_images_per_s"] > 0 for k in ("alone", "streams", "processes"))
    assert "2 processes" in (tmp_path / "gpu_streams.md").read_text()
