#!/usr/bin/env bash
# Install mmcv (with its compiled ops) into the active venv's Python.
#
# No mmcv wheel exists for torch 2.14, so the source release is compiled once and the
# wheel is cached under $WHEEL_CACHE; later installs take that wheel in seconds.
# Two fixes to the source release are needed: setup.py imports pkg_resources
# (setuptools<70) and hard-codes -std=c++17, which torch 2.14's headers reject.
# The ops are built for the CPU even on a CUDA machine (CUDA hidden, FORCE_CUDA=0): the configs
# here use no mmcv CUDA op, the build takes minutes instead of an hour, and the same cached
# wheel serves CPU and GPU machines (DeepLabV2/V3+ trained on an H200 with it).
set -euo pipefail

PY=${PY:-python}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_CACHE=${WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tagclip/wheels/torch-$torch_version}
mkdir -p "$WHEEL_CACHE"

wheel=$(ls "$WHEEL_CACHE"/mmcv-"$MMCV_VERSION"-"$py_tag"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "[build_mmcv] no cached wheel in $WHEEL_CACHE: compiling mmcv $MMCV_VERSION (20-40 min on 2 cores)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" -m pip install -q 'setuptools<70' wheel ninja
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    src="$work/mmcv-$MMCV_VERSION"
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q 'c++20' "$src/setup.py" || { echo "[build_mmcv] could not patch the C++ standard in setup.py" >&2; exit 1; }
    CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$src"
    built=$(ls "$work"/dist/mmcv-*.whl)
    "$PY" - "$built" <<'PYEOF' || { echo "[build_mmcv] built wheel has no compiled ops" >&2; exit 1; }
import sys, zipfile
sys.exit(not any(n.startswith("mmcv/_ext") for n in zipfile.ZipFile(sys.argv[1]).namelist()))
PYEOF
    # copy then rename, so an interrupted copy never leaves a broken wheel in the cache
    cp "$built" "$WHEEL_CACHE/.partial"
    mv "$WHEEL_CACHE/.partial" "$WHEEL_CACHE/$(basename "$built")"
    wheel=$(ls "$WHEEL_CACHE"/mmcv-"$MMCV_VERSION"-"$py_tag"-*.whl | head -n 1)
fi
# torch itself asks for setuptools>=77 (only the mmcv build needed the old one)
"$PY" -m pip install -q 'setuptools>=77'
echo "[build_mmcv] installing $wheel"
"$PY" -m pip install -q --no-deps "$wheel"
"$PY" -c 'import mmcv.ops; print("[build_mmcv] mmcv", __import__("mmcv").__version__, "with ops")'
