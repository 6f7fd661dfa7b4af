#!/usr/bin/env bash
# The one device check of this project (about 9 minutes on one H100): step-time overhead of TNATrainer vs
# Trainer in bf16 (ViT-B/16, GPT-2 small, and the CPU shapes; restore path and zero copy), then the model-soup
# example at a larger size.
# Run from the repository root with the Fashion-MNIST *.gz files copied to examples/modelsoup/data/:
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())' | tee "$OUT/gpu_env.txt"
timeout 300 python3 benchmarks/overhead.py --device cuda --dtype bf16 --large --steps 6 --warmup 3 --rounds 2 \
  > "$OUT/overhead_cuda.json" 2> "$OUT/overhead_cuda.log"
echo "overhead exit $?"; cat "$OUT/overhead_cuda.json"; tail -5 "$OUT/overhead_cuda.log"
OUT="$OUT" RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-300}" INGREDIENT_BUDGET_S="${INGREDIENT_BUDGET_S:-180}" \
  bash examples/modelsoup/gpu_check.sh > "$OUT/modelsoup_stdout.log" 2>&1
echo "modelsoup exit $?"; tail -40 "$OUT/modelsoup_stdout.log"
