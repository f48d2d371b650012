#!/usr/bin/env bash
# Multi-process quantization + evaluation, like mmdet's tools/dist_test.sh:
#   bash tools/dist_quantize.sh CONFIG CHECKPOINT NPROC [tools/quantize.py options]
# Every rank calibrates on the same images; rank 0's parameters are broadcast and the
# ranks' digests compared (results.json: calibration.rank_digests); evaluation is sharded.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# the project's interpreter (make install's venv) unless PYTHON names another one
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$ROOT/tools/quantize.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
