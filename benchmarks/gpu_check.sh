#!/usr/bin/env bash
# One device session, at most BUDGET seconds (default 540, under the device tool's 600 s per
# command): train `base` on the real genomes with its preset recipe, evaluate it on the test
# split, then the model and analyze throughput tables (torch.compile rows, analyze time per
# measure family). Every step's output is also written under $OUT (the device tool brings it
# back even when the command is cut short), steps in order of importance, each capped by what
# is left of the budget.
#
# Usage (repo root, a prepared directory of the real genomes):
#   bash benchmarks/gpu_check.sh PREPARED_DIR
# Smoke test on CPU (same steps, small sizes):
#   PRESET=tiny GENOMES=64 TRAIN_ARGS="--max-steps 5" PYTHON=.venv/bin/python \
#     bash benchmarks/gpu_check.sh PREPARED_DIR
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
P=${1:?usage: gpu_check.sh PREPARED_DIR}
PRESET=${PRESET:-base}
GENOMES=${GENOMES:-1024}
BUDGET=${BUDGET:-540}
PY=${PYTHON:-python3}
OUTD=${OUT:-/tmp/gpu_out}
WORK=$(mktemp -d)
mkdir -p "$OUTD"
start=$(date +%s)

left() { echo $(( BUDGET - ($(date +%s) - start) )); }

# step NAME SECONDS CMD...: run CMD for at most min(SECONDS, what is left), output to the
# terminal (last lines) and to $OUTD/NAME.txt (all of it)
step() {
  local name=$1 cap=$2
  shift 2
  local t=$(( $(left) < cap ? $(left) : cap ))
  if (( t < 20 )); then
    echo "== $name: skipped (budget spent)"
    return
  fi
  echo "== $name (at most $t s)"
  local s=$(date +%s)
  timeout "$t" "$@" > "$OUTD/$name.txt" 2>&1
  echo "exit $? after $(( $(date +%s) - s )) s" >> "$OUTD/$name.txt"
  grep -v "Loading\|Writing\|it/s\]\|s/it\]" "$OUTD/$name.txt" | tail -16
}

{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', \
transformers.__version__)"; } | tee "$OUTD/machine.txt"
# TRAIN_ARGS: extra train options, e.g. "--max-steps 5" for a smoke run
step train 230 $PY -m bertgeom.cli train "$P" --out "$WORK/model" --preset "$PRESET" --quiet \
  ${TRAIN_ARGS:-}
cp "$WORK/model/history.tsv" "$OUTD/history.tsv" 2>/dev/null && cat "$OUTD/history.tsv"
step evaluate 60 $PY -m bertgeom.cli evaluate "$WORK/model" "$P" --out "$OUTD/evaluate" \
  --batch-size 256
# the measures on CUDA against the CPU, and analyze's CUDA paths (several layers' gate
# statistics per call, checkpoints of CUDA tensors, resume) on a tiny model
step cuda_tests 60 $PY -m pytest -q -p no:cacheprovider tests/unit/test_geometry_device.py \
  tests/integration/test_analyze.py -k "cuda or one_batch or resumes"
step model_bench 120 $PY benchmarks/model.py --prepared "$P" --preset "$PRESET" --genomes 2048
step analyze_bench 150 $PY benchmarks/analyze.py --prepared "$P" --preset "$PRESET" \
  --genomes "$GENOMES"
echo "total $(( $(date +%s) - start )) s"
rm -rf "$WORK"
