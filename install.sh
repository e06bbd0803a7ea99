#!/usr/bin/env bash
# Installs clipface and every optional backend on a fresh machine (CPU only), into a virtual environment.
#   bash install.sh          # torch (CPU build, pinned), then clipface[all]          (about 2.2 GB)
#   bash install.sh --test   # the same, plus the pinned test tools and Debian's Chromium (about 0.4 GB more)
# It installs into ./.venv, made once with python3 (or $PYTHON); inside an active virtual environment it
# installs there instead and links ./.venv to it. So `.venv/bin/clipface` and `.venv/bin/python` always work,
# and ./clipface links to the command, without activating anything.
# Set PYTHON to choose the interpreter that makes the venv (default: python3, else python).
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if [[ -n "${VIRTUAL_ENV:-}" && ! -e .venv ]]; then
  ln -s "$VIRTUAL_ENV" .venv
elif [[ ! -x .venv/bin/python ]]; then
  base=${PYTHON:-$(command -v python3 || command -v python || true)}
  [[ -n "$base" ]] || { echo "install.sh: no python3 on PATH; install Python 3.10+ (or set PYTHON)" >&2; exit 1; }
  "$base" -m venv .venv || { echo "install.sh: '$base -m venv' failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
py=.venv/bin/python
echo "install.sh: installing into $(cd .venv && pwd -P) (activate it with: source .venv/bin/activate)" >&2
# torch first and pinned: 2.13.0 is a CPU build; an unpinned torch pulls gigabytes of CUDA packages.
"$py" -m pip install -q torch==2.13.0
if [[ "${1:-}" == "--test" ]]; then
  "$py" -m pip install -q -e ".[all,test]"
  # clip-retrieval's own client, back end module and web front end, for the compatibility tests; --no-deps:
  # its package __init__ pulls in its whole back end (flask, open_clip, ...), which clipface never imports
  "$py" -m pip install -q --no-deps clip-retrieval==2.45.0
  # what its back end (clip_back, audited in tests/test_audit_clip_back.py) imports, less its CLIP loaders
  "$py" -m pip install -q flask==3.1.3 flask-restful==0.3.10 flask-cors==6.0.5 fire==0.7.1 h5py==3.16.0 \
    prometheus-client==0.26.0
else
  "$py" -m pip install -q -e ".[all]"
fi
# ./clipface runs the installed command from any shell, venv active or not
ln -sfn .venv/bin/clipface clipface
if [[ "${1:-}" == "--test" ]] && ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "install.sh: Chromium could not be installed; the browser tests will be skipped" >&2
  else
    echo "install.sh: install Debian's chromium (as root) to run the browser tests; they are skipped without it" >&2
  fi
fi
