#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment: the only set-up splitsweep needs.
#   scripts/bootstrap.sh          runtime + dashboard
#   scripts/bootstrap.sh --dev    also test tools and headless Chromium for the browser test
# The venv lives in $SPLITSWEEP_VENV (default: .venv in the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SPLITSWEEP_VENV:-.venv}
python=${PYTHON:-python3}
extras=dashboard
[ "${1:-}" = "--dev" ] && extras=dev

stamp="$venv/.splitsweep-installed-$extras"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip wheel setuptools
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing splitsweep[$extras] (first time: ~3 min, NNCodec compiles)"
  # constraints.txt pins torch to the local CPU build: nncodec declares torch, and an
  # unpinned resolve would pull several GB of CUDA wheels that splitsweep never imports.
  "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[$extras]"
  echo "$want" > "$stamp"
fi
if [ "$extras" = dev ] && ! command -v chromium >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's chromium for the browser test"
  if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  $apt_get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq chromium >/dev/null \
    || echo "bootstrap: warning: chromium could not be installed; the browser test will be skipped" >&2
fi
