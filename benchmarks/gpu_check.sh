#!/usr/bin/env bash
# One device session (~12 min of GPU time): train `base` on the real genomes with its preset
# recipe, evaluate it on the test split, then print the model and analyze throughput tables
# (with torch.compile rows and the analyze time per measure family). Usage (on the GPU machine,
# repo root, with a prepared directory): bash benchmarks/gpu_check.sh PREPARED_DIR
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
P=${1:-.device/prep_full}
OUTD=${OUT:-/tmp/gpu_out}
mkdir -p "$OUTD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
t0=$(date +%s)
timeout 240 python3 -m bertgeom.cli train "$P" --out /tmp/base --preset base --quiet 2>&1 \
  | grep -v "Loading\|Writing" | tail -3
cp /tmp/base/history.tsv "$OUTD/base_history.tsv" 2>/dev/null; cat /tmp/base/history.tsv
echo "train wall: $(( $(date +%s) - t0 )) s"
timeout 60 python3 -m bertgeom.cli evaluate /tmp/base "$P" --out "$OUTD/eval" --batch-size 256 \
  2>&1 | grep -v "Loading" | tail -14
timeout 150 python3 benchmarks/model.py --prepared "$P" --preset base --genomes 2048 2>&1 | tail -12
timeout 200 python3 benchmarks/analyze.py --prepared "$P" --preset base --genomes 256 1024 \
  --per-family 2>&1 | tail -14
