#!/usr/bin/env bash
# Set up prorl on a fresh machine: bubblewrap and libseccomp for the code sandbox (when apt is
# available), a virtual environment in .venv, and the package with its test extras (which
# include pyseccomp, the Python bindings the sandbox builds its syscall filter with).
# CPU machines get the CPU build of torch (2.13.0); pass --gpu for a normal (CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="cpu,test"
if [[ "${1:-}" == "--gpu" ]]; then EXTRAS="test"; fi

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
echo "prorl installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
