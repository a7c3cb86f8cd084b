#!/usr/bin/env bash
# The transformer example on this machine's GPUs through torchrun: one process per GPU, the NCCL
# backend when there are several (thrifty.train picks NCCL on CUDA), CUDA alone with one GPU.
# Prints the step time and the goodput thrifty's own fitted model predicts at the batch it chose,
# and the energy the GPUs' own counters measured (NVML), with the mean power it implies.
#
#   bash benchmarks/train_gpu.sh [EPOCHS] [SENTENCES]     (run from the repository root)
set -euo pipefail
epochs="${1:-3}"
sentences="${2:-20000}"
python="${PYTHON:-python3}"
gpus="$("$python" -c 'import torch; print(torch.cuda.device_count())')"
if [[ "$gpus" -lt 1 ]]; then
    echo "no CUDA GPU visible: nothing to measure" >&2
    exit 2
fi
nvidia-smi -L || true
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"nccl", ".".join(map(str, torch.cuda.nccl.version())))'
ckpt="$(mktemp -d)"
report="$ckpt/report.json"
start=$SECONDS
PYTHONPATH=src PYTHONUNBUFFERED=1 "$python" -m torch.distributed.run --standalone \
    --nproc_per_node "$gpus" examples/tiny_lm.py --epochs "$epochs" --sentences "$sentences" \
    --ckpt "$ckpt" --report "$report"
echo "wall $((SECONDS - start)) s for $epochs epochs on $gpus GPU(s), start-up included"
"$python" - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
model = report["model"]
print("report: step", report["step"], "epoch", report["epoch"], "batch", report["batch_size"],
      "explored", model.get("explored"), "kinds", sorted(model["throughput"]))
kwh, startup = report.get("energy_kwh"), report.get("startup_s")
print("start-up", "unknown" if startup is None else f"{startup:.1f} s", "| energy",
      "not measured (no NVML counter)" if kwh is None else f"{kwh * 1000:.2f} Wh measured")
PY
