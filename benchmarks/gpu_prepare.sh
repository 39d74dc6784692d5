#!/usr/bin/env bash
# Stage what benchmarks/gpu_campaign.py needs on the GPU machine, which has no network and only receives this
# checkout (64 MiB in all): the wheels it lacks (datasets with dill and multiprocess, torch-pruning) and the
# CIFAR-10 parquet files, and timm's train.py for campaign cell E7, into .gpu_stage/ (ignored by git). Then print the
# command line to run there.
#
#   bash benchmarks/gpu_prepare.sh                 # data from ../shared/data/cifar10-jpeg
#   PRAC_CIFAR10=/path/to/cifar10-jpeg bash benchmarks/gpu_prepare.sh
#
# The wheels are the versions installed here (the ones the test suite ran with), for CPython 3.12 on x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."

stage=.gpu_stage
data_source=${PRAC_CIFAR10:-../shared/data/cifar10-jpeg}
python=${PYTHON:-python}
limit_bytes=$((64 * 1024 * 1024))

for file in train.parquet test.parquet; do
    [[ -f "$data_source/$file" ]] || { echo "gpu_prepare: $data_source/$file not found (set PRAC_CIFAR10)" >&2; exit 1; }
done

version() {  # the version installed here, so the GPU machine runs what the tests ran
    "$python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null \
        || { echo "gpu_prepare: $1 is not installed here; install the project first (pip install -e .)" >&2; exit 1; }
}
wheels=("datasets==$(version datasets)" "dill==$(version dill)" "multiprocess==$(version multiprocess)" "torch-pruning==$(version torch-pruning)")

rm -rf "$stage"
mkdir -p "$stage/wheels" "$stage/data"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$stage/wheels" "${wheels[@]}"
cp "$data_source/train.parquet" "$data_source/test.parquet" "$stage/data/"
# campaign cell E7 runs timm's real train.py (patched there with the repository's patch file)
timm_script=${PRAC_TIMM_SCRIPT:-../shared/timm/train_2026-08-08_aa4b585.py}
if [[ -f "$timm_script" ]]; then
    mkdir -p "$stage/timm" && cp "$timm_script" "$stage/timm/train.py"
else
    echo "gpu_prepare: no timm train.py at $timm_script (set PRAC_TIMM_SCRIPT): campaign cell E7 will not start" >&2
fi

# what travels: tracked and untracked-not-ignored files, plus the carried .gpu_stage
tree_bytes=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -n 1 | cut -f1; } || echo 0)
stage_bytes=$(du -sb "$stage" | cut -f1)
total=$((tree_bytes + stage_bytes))
echo "staged: $(ls "$stage/wheels" | tr '\n' ' ')"
echo "size: checkout $((tree_bytes / 1024)) KiB + .gpu_stage $((stage_bytes / 1024)) KiB = $((total / 1024 / 1024)) MiB of 64"
if (( total > limit_bytes )); then
    echo "gpu_prepare: $total bytes would travel, more than the 64 MiB limit" >&2
    exit 1
fi

pending=$("$python" benchmarks/campaign_ledger.py status 2>/dev/null || echo "(campaign_ledger.py status failed)")
cat <<EOF

Campaign ledger (benchmarks/results/cells/), before this call:
$pending

Run on the GPU machine (device tool: carry [".gpu_stage"], timeout_s 540), then give the machine back:

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_stage/wheels/*.whl && export PYTHONPATH=/tmp/site && python3 benchmarks/gpu_campaign.py --budget 490 --data .gpu_stage/data

Then here, with FILES_AT the folder the device tool names:
  tar -xzf FILES_AT/cells.tar.gz -C benchmarks/results/cells && python benchmarks/campaign_ledger.py tidy
  python benchmarks/campaign_table.py --write     # and commit benchmarks/results/cells and RESULTS.md
EOF
