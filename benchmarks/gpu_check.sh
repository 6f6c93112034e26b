#!/usr/bin/env bash
# Every GPU figure of the throughput issue in one command, within 8 minutes on one GPU, on a machine with only
# torch, timm, numpy, pandas and Pillow (no anndata, faiss or snakemake): run it from a checkout.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # the same code on the CPU at tiny sizes (CI runs this)
#
# 1. training step and epoch img/s of EGN, the ViT and TCGN at the papers' architectures (bf16), each beside its
#    bare timm backbone (benchmarks/train_throughput.py --preset paper);
# 2. the same EGN trained on the GPU's device-resident path (fp32, bf16) and the CPU host path: test PCC@M;
# 3. exact exemplar search in torch on the GPU at 100k and 1M windows (d = 512), recall against NumPy;
# 4. the JPEG window store decoded by nvJPEG vs the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_SECONDS:-480}
DRY=""
if [[ "${1:-}" == "--dry-run" ]]; then DRY="--dry-run"; fi
SECONDS=0
left() { echo $((BUDGET - SECONDS > 10 ? BUDGET - SECONDS : 10)); }
step() { echo; echo "== $1 ($(( SECONDS ))s of ${BUDGET}s used)"; shift; timeout "$(left)" "$@"; }

if [[ -n "$DRY" ]]; then
  echo "gpu_check dry run: CPU, tiny presets ($($PY -c 'import torch; print("torch", torch.__version__)'))"
  step "training throughput" "$PY" benchmarks/train_throughput.py --preset tiny --device cpu --steps 2 --epochs 1 \
    --models egn vit tcgn
else
  "$PY" -c 'import torch, timm; assert torch.cuda.is_available(), "no CUDA device"; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__, "timm", timm.__version__)'
  step "training throughput (papers' architectures, bf16)" "$PY" benchmarks/train_throughput.py --preset paper \
    --precision bf16 --steps 20 --epochs 2 --models egn vit tcgn
fi
step "GPU path vs CPU path" "$PY" benchmarks/gpu_check.py agreement $DRY
step "exemplar search" "$PY" benchmarks/gpu_check.py search $DRY
step "JPEG window decode" "$PY" benchmarks/gpu_check.py decode $DRY
echo
echo "gpu_check: done in ${SECONDS}s"
