#!/usr/bin/env bash
# Installs clipface and every optional backend on a fresh machine (CPU only).
#   bash install.sh          # torch (CPU build, pinned), then clipface[all]
#   bash install.sh --test   # the same, plus Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch first and pinned: 2.13.0 is a CPU build; an unpinned torch pulls gigabytes of CUDA packages.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[all]"
if [[ "${1:-}" == "--test" ]]; then
  # clip-retrieval's own client and web front end, for the compatibility tests; --no-deps: its package
  # __init__ pulls in its whole back end (flask, open_clip, ...), which clipface never imports
  python -m pip install -q --no-deps clip-retrieval==2.45.0
fi
if [[ "${1:-}" == "--test" ]] && ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "install.sh: Chromium could not be installed; the browser tests will be skipped" >&2
  else
    echo "install.sh: install Debian's chromium (as root) to run the browser tests; they are skipped without it" >&2
  fi
fi
