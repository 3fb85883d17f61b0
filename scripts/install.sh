#!/usr/bin/env bash
# Create .venv and install everything the project needs into it (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Debian's chromium, the browser the HTML tests drive through Playwright (tests/browser.py):
# Playwright never downloads a browser of its own here. Installed once, as root, quietly.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "[install] /usr/bin/chromium missing: run 'apt-get install chromium' as root for the browser tests" >&2
    fi
fi
[ -x "$PY" ] || python3 -m venv .venv
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
pip_install $(grep -E '^torch(vision)?==' requirements.txt)
pip_install -r requirements.txt
PY="$PY" bash scripts/build_mmcv.sh
pip_install --no-deps -e .
"$PY" -c 'import torch, open_clip, mmseg, mmcv.ops, pydensecrf.densecrf; print("[install] ok: torch", torch.__version__, "mmseg", mmseg.__version__)'
