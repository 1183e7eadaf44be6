#!/usr/bin/env bash
# The GPU table of benchmarks/RESULTS.md: dvae_jax's train step against the PyTorch reference (and,
# with REVIEW_REPO, your own checkout of the review's code) on an NVIDIA GPU, in float32, TF32 and
# bf16, at the review's shapes and the larger settings.
#
# Usage, from the root of a dvae_jax checkout on a machine with an NVIDIA GPU and its driver:
#     bash benchmarks/gpu.sh [RESULTS_DIR]            # default: benchmarks/gpu_results/<UTC time>
# Environment (all optional):
#     PYTHON=python3.11      the interpreter the venv is made from (3.11 or later)
#     VENV=.venv-gpu         the venv it creates or reuses
#     TORCH_INDEX=https://download.pytorch.org/whl/cu128
#                            where torch's CUDA wheels come from (pick the CUDA version your
#                            driver supports, https://pytorch.org/get-started/locally/): PyPI may
#                            give a build for another CUDA version, or a CPU-only one
#     TORCH_VERSION=2.13.0   the version setup.cfg's [torch] extra pins (2.13.0+cu128 satisfies it)
#     JAX_EXTRA=cuda12       or cuda13: jax's CUDA plugin with its pip-installed CUDA libraries
#     WHEELS=DIR             install offline from a folder of wheels instead (a machine without
#                            network): fill it elsewhere with
#                              pip download -d DIR "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
#                              pip download -d DIR 'jax[cuda12]' 
#                              pip download -d DIR .   # this package's own dependencies
#                            for the GPU machine's Python version and platform (see pip download
#                            --python-version / --platform), then copy DIR over
#     REVIEW_REPO=PATH       a clone of https://github.com/XiaoyuBIE1994/DVAE: also time its code
#     MODELS=vrnn,srnn       SETTINGS=review,mel,review_large,review_long
#     PRECISIONS="float32 tf32 bf16"    STEPS=20    WARMUP=3
# Output in RESULTS_DIR: bench-<precision>.json and .md (the table) per precision, table.md (all
# of them), nvidia-smi.txt, versions.txt, bench-<precision>.log.
set -euo pipefail

cd "$(dirname "$0")/.."
RESULTS=${1:-benchmarks/gpu_results/$(date -u +%Y%m%dT%H%M%SZ)}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
JAX_EXTRA=${JAX_EXTRA:-cuda12}
MODELS=${MODELS:-vrnn,srnn}
SETTINGS=${SETTINGS:-review,mel,review_large,review_long}
PRECISIONS=${PRECISIONS:-float32 tf32 bf16}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
mkdir -p "$RESULTS"

command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
nvidia-smi > "$RESULTS/nvidia-smi.txt"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --upgrade)
if [ -n "${WHEELS:-}" ]; then
    PIP+=(--no-index --find-links "$WHEELS")
    "${PIP[@]}" "torch==$TORCH_VERSION" "jax[$JAX_EXTRA]"
else
    # torch first, from its CUDA index, so that the [torch] extra below finds it and keeps it
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
    # jax's CUDA plugin brings its own nvidia-* wheels; if pip reports a conflict with torch's
    # pins, torch usually runs on the newer minor versions it installs (check versions.txt)
    "${PIP[@]}" "jax[$JAX_EXTRA]"
fi
"${PIP[@]}" -e ".[torch]"

{
    date -u
    git rev-parse HEAD 2>/dev/null || true
    "$VENV/bin/python" - <<'EOF'
import platform, jax, torch
print("python", platform.python_version(), platform.platform())
print("jax", jax.__version__, "devices", jax.devices())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF
    "$VENV/bin/python" -m pip freeze
} > "$RESULTS/versions.txt"

# JAX takes 75 % of the GPU's memory at its first use by default; torch runs in the same process
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}

REVIEW=()
if [ -n "${REVIEW_REPO:-}" ]; then
    REVIEW=(--review-repo "$REVIEW_REPO")
fi
: > "$RESULTS/table.md"
for precision in $PRECISIONS; do
    "$VENV/bin/dvae-jax" bench --device gpu --precision "$precision" --models "$MODELS" \
        --settings "$SETTINGS" --steps "$STEPS" --warmup "$WARMUP" \
        --json "$RESULTS/bench-$precision.json" ${REVIEW[@]+"${REVIEW[@]}"} 2>&1 | tee "$RESULTS/bench-$precision.log"
    # the markdown table is what bench prints from its header line to the ceiling line
    sed -n '/^| setting |/,/^matmul ceiling/p' "$RESULTS/bench-$precision.log" > "$RESULTS/bench-$precision.md"
    { echo "### $precision"; echo; cat "$RESULTS/bench-$precision.md"; echo; } >> "$RESULTS/table.md"
done
# SRNN's two data-driven LSTMs through cuDNN (jax.experimental.rnn), float32, beside the scan
# above; first the check that cuDNN's LSTM equals the scan on this GPU (tests/test_cudnn_lstm.py).
"$VENV/bin/python" -m pytest -q tests/test_cudnn_lstm.py -k gpu 2>&1 | tee "$RESULTS/cudnn-test.log" || true
"$VENV/bin/dvae-jax" bench --device gpu --precision float32 --models srnn --lstm-impl cudnn \
    --settings "$SETTINGS" --steps "$STEPS" --warmup "$WARMUP" --no-torch \
    --json "$RESULTS/bench-cudnn.json" 2>&1 | tee "$RESULTS/bench-cudnn.log" || true
sed -n '/^| setting |/,/^matmul ceiling/p' "$RESULTS/bench-cudnn.log" > "$RESULTS/bench-cudnn.md"
{ echo "### float32, SRNN with --lstm-impl cudnn"; echo; cat "$RESULTS/bench-cudnn.md"; echo; } >> "$RESULTS/table.md"
# Data-parallel scaling over this machine's GPUs (benchmarks/MESH.md), when it has several
N_GPUS=$("$VENV/bin/python" -c "import jax; print(jax.device_count())" 2>/dev/null || echo 1)
if [ "$N_GPUS" -gt 1 ]; then
    for model in vrnn srnn; do
        "$VENV/bin/python" benchmarks/mesh.py --model "$model" --out "$RESULTS/mesh-$model.json" \
            2>&1 | tee "$RESULTS/mesh-$model.log" || true
        { echo "### data-parallel, $model"; echo; grep -v '^$' "$RESULTS/mesh-$model.log" | grep '^|\|^\*\*'; echo; } >> "$RESULTS/table.md"
    done
fi
echo "wrote $RESULTS (table.md, bench-*.json, mesh-*.json, nvidia-smi.txt, versions.txt)"
