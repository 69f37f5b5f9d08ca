#!/usr/bin/env bash
# The CUDA paths in one go, for a short loan of an NVIDIA machine: the smoke preset trained on the GPU
# (bf16, or fp16 without bf16), exported, and the bench's CUDA rows, all written to one folder (argument 1).
set -euo pipefail
out=${1:-runs/gpu-check}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: no CUDA device visible to torch (torch.cuda.is_available() is False); nothing run" >&2
    exit 2
fi
mkdir -p "$out"
started=$SECONDS
{ nvidia-smi || true; python -m torch.utils.collect_env || true; } > "$out/gpu-check-machine.txt" 2>&1
step() {  # name, command...: run it with its log in $out, time it, stop at the first failure
    local name=$1; shift
    local t0=$SECONDS
    echo "gpu-check: $name ..."
    if ! "$@" > "$out/gpu-check-$name.log" 2>&1; then
        tail -20 "$out/gpu-check-$name.log" >&2
        echo "gpu-check: $name FAILED after $((SECONDS - t0)) s (log: $out/gpu-check-$name.log)" >&2
        exit 1
    fi
    echo "gpu-check: $name done in $((SECONDS - t0)) s" | tee -a "$out/gpu-check-times.txt"
}
step train-all kd train-all --preset smoke --run-dir "$out"
step export kd export --preset smoke --run-dir "$out"
step bench kd bench --preset smoke --run-dir "$out" --devices cuda --min-seconds 1
python - "$out" <<'PY' | tee "$out/gpu-check.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
print(f"# gpu-check of {out}\n\ntraining device: {manifest['device']}\n")
print((out / "results.md").read_text())
print((out / "bench" / "summary.md").read_text())
PY
echo "gpu-check: all done in $((SECONDS - started)) s; everything is in $out/"
