#!/usr/bin/env bash
# The GPU measurements of issue 15 in one call on a lent GPU machine (no network there).
# Needs, in the repo root: .whl/ (pydantic, exchange_calendars and their small dependencies as
# py3.12 wheels; the image has torch, Lightning, pandas, scipy, pytest) and .mdata/ (a copy of
# ../shared/market-data). Writes its logs and JSON to $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 GX_ANALYTICS_ENABLED=False DAGSTER_DISABLE_TELEMETRY=1
quiet() { grep -v -E "LeafSpec|TPU available|GPU available|LOCAL_RANK|Trainer.fit. stopped|warnings.warn|^\s*$"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider stage2_assets_tests/test_gpu.py 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"
timeout 300 python3 benchmarks/bench_training_scale.py --data .mdata --symbols 0 5000 \
  --batch-sizes 128 1024 8192 --accelerator gpu --json-out "$OUT/gpu.json" 2>&1 | quiet | tee "$OUT/gpu.txt"
timeout 150 python3 benchmarks/bench_training_scale.py --data .mdata --symbols 0 5000 \
  --batch-sizes 8192 --max-epochs 3 --accelerator cpu --json-out "$OUT/cpu_same_machine.json" 2>&1 | quiet | tee "$OUT/cpu_same_machine.txt"
