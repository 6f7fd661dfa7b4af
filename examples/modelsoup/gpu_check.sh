#!/usr/bin/env bash
# GPU check of the model-soup example (one GPU, < 6 minutes on an H100): full Fashion-MNIST (27.5k pretrain /
# 27.5k fine-tune / 5k held-out / 10k test), a ViT-Tiny-width model (patch 4 on 28x28: 49 patches + [CLS],
# hidden 192, 6 layers, 3 heads, MLP 768, ~2.7M parameters), 10 ingredients per set (TNA-PFN anchors 0.4 vs
# plain Trainer), uniform and greedy soups, anchors verified. Ingredients run in-process (one GPU; no
# `accelerate launch` start-up per ingredient); training and evaluation use plain torch datasets, so
# `datasets` / `evaluate` are not needed.
#
# Run from the repository root:   bash examples/modelsoup/gpu_check.sh
# Needs: torch with CUDA, transformers >= 5, accelerate, safetensors, pyyaml, numpy (matplotlib optional: plot).
# Data: the four Fashion-MNIST *-ubyte.gz files in $FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist or
#   examples/modelsoup/data/ (git-ignored). To ship them with the working tree:
#     mkdir -p examples/modelsoup/data && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz examples/modelsoup/data/
#   and carry "examples/modelsoup/data" (30 MB).
# Output in $OUT (default /tmp/modelsoup_gpu_out): results.json, results.md, modelsoup.png (with matplotlib),
#   run.log, env.txt. New ingredient pairs stop starting after INGREDIENT_BUDGET_S seconds (default 210) so the
#   soups and the report always fit the RUN_TIMEOUT_S (default 330) limit; results.md says how many were trained.
# EXTRA_ARGS (appended, so they override) and DEVICE (default cuda) allow a CPU dry run of this script:
#   DEVICE=cpu EXTRA_ARGS="--pretrain_size 500 --finetune_size 500 --val_size 200 --test_size 300 --base_epochs 1
#     --epochs 1 --num_ingredients 3 --vit_hidden_size 32 --vit_num_layers 1 --vit_num_heads 2
#     --vit_intermediate_size 64 --bf16 false" bash examples/modelsoup/gpu_check.sh
set -uo pipefail

OUT="${OUT:-/tmp/modelsoup_gpu_out}"
PY="${PY:-$(command -v python || command -v python3)}"
WORK="${WORK:-/tmp/modelsoup_gpu_work}"
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-330}"
INGREDIENT_BUDGET_S="${INGREDIENT_BUDGET_S:-210}"
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."

DATA_DIR="${FASHION_MNIST_DIR:-}"
for d in "$DATA_DIR" /usr/share/datasets/fashion-mnist examples/modelsoup/data examples/modelsoup/data/fashion-mnist; do
  if [ -n "$d" ] && [ -f "$d/train-images-idx3-ubyte.gz" ]; then DATA_DIR="$d"; break; fi
done
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST *-ubyte.gz not found: set FASHION_MNIST_DIR or copy them to examples/modelsoup/data/" | tee "$OUT/run.log"
  exit 2
fi

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c 'import sys, torch, transformers, accelerate; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(), "transformers", transformers.__version__, "accelerate", accelerate.__version__)'
  "$PY" -c 'import datasets' 2>/dev/null && echo "datasets installed (not used here)" || echo "no datasets: torch back ends"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

rm -rf "$WORK"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
timeout --signal=TERM --kill-after=10 "$RUN_TIMEOUT_S" "$PY" examples/modelsoup/run_modelsoup.py \
  --device "${DEVICE:-cuda}" --launcher inprocess --backend torch --eval_backend torch --bf16 \
  --data fashion_mnist --data_dir "$DATA_DIR" --val_size 5000 \
  --vit_image_size 28 --vit_patch_size 4 --vit_hidden_size 192 --vit_num_layers 6 --vit_num_heads 3 \
  --vit_intermediate_size 768 --base_epochs 8 --base_learning_rate 1e-3 \
  --num_ingredients 10 --epochs 2 --batch_size 256 --num_threads 4 --eval_batch_size 2048 \
  --ingredient_time_budget_s "$INGREDIENT_BUDGET_S" \
  --work_dir "$WORK" --results_dir "$OUT" ${EXTRA_ARGS:-} 2>&1 | tee "$OUT/run.log"
rc=${PIPESTATUS[0]}
echo "run_modelsoup.py exit code $rc (124: timed out)" | tee -a "$OUT/run.log"
ls -la "$OUT"
exit "$rc"
