#!/usr/bin/env bash
# Set up prorl on a fresh machine: bubblewrap for the code sandbox (when apt is available),
# a virtual environment in .venv, and the package with its test extras.
# CPU machines get the CPU build of torch (2.13.0); pass --gpu for a normal (CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="cpu,test"
if [[ "${1:-}" == "--gpu" ]]; then EXTRAS="test"; fi

if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
      || echo "warning: could not install bubblewrap; code verification will refuse to run untrusted code" >&2
  else
    echo "warning: bubblewrap (bwrap) not found; install it (e.g. apt-get install bubblewrap) for the code sandbox" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "prorl installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
