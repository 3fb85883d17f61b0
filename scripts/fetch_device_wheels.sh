#!/usr/bin/env bash
# Download into .whl/ what scripts/gpu_session.sh installs on a lent GPU machine, which has no
# package registry: Python 3.12 manylinux wheels (no dependencies resolved: the machine's image
# already holds torch, numpy, scipy, matplotlib, opencv, timm, huggingface_hub, ... so only what
# it lacks is named), the mmcv and pydensecrf2 source releases (built there), and what those two
# builds need beyond the machine's own packages (.whl/build/).
# Run here, where pip reaches the registry; .whl/ is git-ignored through .git/info/exclude.
#
#     bash scripts/fetch_device_wheels.sh        # then: du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=.whl

# runtime packages, the versions of requirements.txt and of this project's .venv
WHEELS=(
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
    mmengine==0.10.7 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0
    mmsegmentation==1.2.2 prettytable==3.18.0
    pycocotools==2.0.11
)
SOURCES=(mmcv==2.1.0 pydensecrf2==1.1)
# for the builds alone, kept in .whl/build/ (gpu_session.sh must not install them with the rest):
# mmcv's setup.py imports pkg_resources; pydensecrf2's asks for exactly this Cython (setup_requires)
BUILD_ONLY=(setuptools==69.5.1 Cython==0.29.36)

mkdir -p .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf "$DEST"
mkdir -p "$DEST/src" "$DEST/build"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# quiet, except on failure (less pip's warnings about this machine's missing local index folders)
pip_download() {
    local log
    log=$(mktemp)
    if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps "$@" >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
pip_download --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d "$DEST" "${WHEELS[@]}"
pip_download --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d "$DEST/build" \
    "${BUILD_ONLY[@]}"
# pip reads an sdist's metadata, and mmcv's setup.py needs pkg_resources: give it the old setuptools
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$tools" "$DEST"/build/setuptools-*.whl
PYTHONPATH=$tools pip_download --no-build-isolation --no-binary :all: -d "$DEST/src" "${SOURCES[0]}"
pip_download --no-binary :all: -d "$DEST/src" "${SOURCES[1]}"
ls -l "$DEST" "$DEST/src" "$DEST/build"
du -sh "$DEST"
