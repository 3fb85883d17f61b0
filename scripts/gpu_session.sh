#!/usr/bin/env bash
# One prepared session on a lent GPU machine (H100/H200 image: Python 3.12, torch 2.11, no package
# registry), run by the workplace's device tool with .whl/ carried (scripts/fetch_device_wheels.sh
# fills it here):
#
#     bash scripts/gpu_session.sh            # run tool: carry [".whl"], timeout_s 600
#
# 1. installs the carried wheels into a folder under /tmp (first on PYTHONPATH, after the checkout)
#    and starts two builds in the background:
#    pydensecrf2 (needed by the CRF tests and benchmarks) and mmcv 2.1.0 with its CPU ops (niced:
#    only checked to build and import, nothing below uses it);
# 2. runs (f, h, c, d, a, b, e by default), each with its own time limit inside one overall budget
#    (a step that no longer fits is skipped): (a) the CUDA cases of tests/test_crf_torch.py and
#    tests/test_parity.py (stages 1 and 2 against the published fixtures), (b) bench_crf,
#    (c) bench_pipeline tf32 and bf16, (d) bench_tags, (e) bench_masks, (f) bench_attention
#    (explicit vs fused attention at 714 and 720 tokens: why stage 1 ran slower in bf16 than
#    fp32), all on cuda; d and e also profile one pass per mode (time per phase, host-device
#    round trips, costliest kernels), e also times stage 2's CAMs in batches of 16 of one size;
#    (h) bench_host: the machine's CPU reading and writing images with 1..8 threads (what the
#    tools' reader and writer threads must keep up with); last, once mmcv is built and if time is
#    left, (g) bench_train_seg --compare amp: stage 3 in fp32 against --amp;
# 3. writes everything under $OUT (at most 8 files come back): summary.md (machine, build and
#    step results, the end of each step's output; also printed last), session.log (every step's
#    full output), builds.log, pipeline_tf32.json, pipeline_bf16.json.
#
# Environment: GPU_SESSION_BUDGET seconds for the whole script (default 540, inside the tool's
# 600 s limit), GPU_SESSION_STEPS (default "f h c d a b e": a rerun can name fewer),
# GPU_SESSION_PIPELINE_PRECISIONS (step c's, default "tf32 bf16"),
# GPU_SESSION_DRY=1 for a rehearsal on a CPU machine with the project's .venv: every step on the
# CPU with tiny sizes, no wheel install (its wheels are for Python 3.12; the .venv has them) and
# no mmcv build (hours on 2 cores); pydensecrf is still built and used from the site folder.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DRY=${GPU_SESSION_DRY:-0}
BUDGET=${GPU_SESSION_BUDGET:-540}
STEPS=${GPU_SESSION_STEPS:-"f h c d a b e"}  # f, h, c and d first: a, b and e wait for the pydensecrf build
if [ "$DRY" = 1 ]; then
    PY=${PY:-$REPO/.venv/bin/python}
    WORK=$(mktemp -d /tmp/gpu_session_dry.XXXXXX)
    OUT=${OUT:-$WORK/out}
    DEVICE=cpu
else
    PY=${PY:-python3}
    WORK=$(mktemp -d /tmp/gpu_session.XXXXXX)
    OUT=${OUT:?OUT must name the folder whose files come back}
    DEVICE=cuda
fi
SITE=$WORK/site            # carried and built packages
BUILD_TOOLS=$WORK/build    # setuptools<70 and Cython 0.29.36, for the two builds only
mkdir -p "$OUT" "$SITE" "$BUILD_TOOLS" "$WORK/wheels" "$WORK/steps"
LOG=$OUT/session.log
SUMMARY=$OUT/summary.md
export PYTHONUNBUFFERED=1
START=$SECONDS
MMCV_WAIT=120  # seconds the script waits for the mmcv build after the steps, at most
ROWS=()
STEP_IDS=()
set -m  # background builds get their own process groups, so that they can be ended whole

note() { echo "[$(date +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }

# step ID LIMIT_S COMMAND...: run it under `timeout` (LIMIT_S, cut to the budget left), its output
# to session.log and to $WORK/steps/ID.out for the summary; one row of the summary's table.
step() {
    local id=$1 limit=$2 rc begin
    shift 2
    if [ "$(left)" -lt 30 ]; then
        note "step $id skipped: $(left) s of the budget left"
        ROWS+=("| $id | skipped (budget) | - | $* |")
        return
    fi
    [ "$limit" -gt "$(($(left) - 10))" ] && limit=$(($(left) - 10))
    note "step $id (limit ${limit} s): $*"
    STEP_IDS+=("$id")
    begin=$SECONDS
    timeout -k 10 "$limit" "$@" > "$WORK/steps/$id.out" 2>&1
    rc=$?
    cat "$WORK/steps/$id.out" >> "$LOG"
    note "step $id: exit $rc after $((SECONDS - begin)) s"
    ROWS+=("| $id | $rc$([ "$rc" = 124 ] && echo ' (time limit)') | $((SECONDS - begin)) | $* |")
}

# build NAME SDIST [ENV...]: pip wheel of a carried source release, then installed into $SITE;
# writes $WORK/NAME.ok or $WORK/NAME.failed.
build() {
    local name=$1 sdist=$2 begin=$SECONDS
    shift 2
    if env PYTHONPATH="$BUILD_TOOLS" "$@" "$PY" -m pip wheel --no-index --no-deps --no-build-isolation \
            -w "$WORK/wheels/$name" "$sdist" \
        && "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WORK/wheels/$name"/*.whl; then
        echo "$((SECONDS - begin))" > "$WORK/$name.ok"
    else
        echo "$((SECONDS - begin))" > "$WORK/$name.failed"
    fi
}

# wait_build NAME PID LIMIT_S: wait for a background build, at most LIMIT_S (and the budget);
# at once if it has finished already
wait_build() {
    local name=$1 pid=$2 until=$((SECONDS + $3))
    [ -f "$WORK/$name.ok" ] || [ -f "$WORK/$name.failed" ] && return
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$until" ] && [ "$(left)" -gt 30 ]; do sleep 1; done
    note "$name build: $(build_state "$name")"
}

build_state() {
    if [ -f "$WORK/$1.ok" ]; then echo "ok in $(cat "$WORK/$1.ok") s"
    elif [ -f "$WORK/$1.failed" ]; then echo "FAILED after $(cat "$WORK/$1.failed") s (builds.log)"
    else echo "unfinished after $((SECONDS - START)) s"; fi
}

# end any build still running (whole process group), then gather the build logs
finish() {
    for pid in ${CRF_PID:-} ${MMCV_PID:-}; do
        kill -0 "$pid" 2>/dev/null && kill -- "-$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    cat "$WORK"/build_*.log > "$OUT/builds.log" 2>/dev/null
}
trap finish EXIT

# --- machine
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); dry run: $DRY; device: $DEVICE; budget ${BUDGET} s"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__,
                                       "| cuda", torch.version.cuda, torch.cuda.is_available())'
} > "$WORK/machine.txt" 2>&1
cat "$WORK/machine.txt" | tee -a "$LOG"

# --- packages
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$BUILD_TOOLS" .whl/build/*.whl \
    >> "$LOG" 2>&1 || note "build tools not installed"
if [ "$DRY" != 1 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        >> "$LOG" 2>&1 || note "carried wheels not installed: later steps may fail"
fi
build pydensecrf .whl/src/pydensecrf2-1.1.tar.gz > "$WORK/build_pydensecrf.log" 2>&1 &
CRF_PID=$!
if [ "$DRY" != 1 ]; then
    # as scripts/build_mmcv.sh: C++20 for torch's headers, CPU ops only (CUDA hidden)
    tar -xzf .whl/src/mmcv-2.1.0.tar.gz -C "$WORK" && sed -i 's/-std=c++17/-std=c++20/g' "$WORK/mmcv-2.1.0/setup.py"
    build mmcv "$WORK/mmcv-2.1.0" CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" \
        nice -n 19 > "$WORK/build_mmcv.log" 2>&1 &
    MMCV_PID=$!
fi
export PYTHONPATH=$REPO:$SITE
note "python path: $PYTHONPATH"

# --- steps
if [ "$DRY" = 1 ]; then
    CRF_ARGS=(--device cpu --threads 1 --workers 1 --repeats 1)
    PIPELINE_ARGS=(--device cpu --tiny --images 4 --batch-size 2 --ceiling-seconds 1)
    TAGS_ARGS=(--device cpu --tiny)
    ATTENTION_ARGS=(--device cpu --batch 2 --precisions fp32 bf16 --seconds 0.2)
    HOST_ARGS=(--images 8 --threads 2)
    MASKS_ARGS=(--device cpu --precisions fp32 --grad-modes loop --repeats 1 --skip-crf --profile 5 --batch 2)
    PIPELINE_PRECISIONS=${GPU_SESSION_PIPELINE_PRECISIONS:-"fp32"}  # the tools refuse tf32 on a CPU
    TEST_DEVICE=cpu
else
    CRF_ARGS=(--device cuda)
    PIPELINE_ARGS=(--device cuda)
    TAGS_ARGS=(--device cuda)
    ATTENTION_ARGS=(--device cuda)
    HOST_ARGS=(--images 64 --threads 8)
    MASKS_ARGS=(--device cuda --workers 16 --precisions fp32 tf32 bf16 --profile 15 --batch 16)
    # step c: tf32 is the issue's "fp32, TF32 allowed"; d and e time strict fp32 too
    PIPELINE_PRECISIONS=${GPU_SESSION_PIPELINE_PRECISIONS:-"tf32 bf16"}
    TEST_DEVICE=cuda  # step a: only the tests' CUDA cases (CI runs the rest)
fi
for id in $STEPS; do
    case $id in
        a) wait_build pydensecrf "$CRF_PID" 240
           step a 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_crf_torch.py tests/test_parity.py -k "$TEST_DEVICE" ;;
        b) wait_build pydensecrf "$CRF_PID" 240
           step b 150 "$PY" benchmarks/bench_crf.py "${CRF_ARGS[@]}" ;;
        c) for precision in $PIPELINE_PRECISIONS; do
               step "c-$precision" 200 "$PY" benchmarks/bench_pipeline.py "${PIPELINE_ARGS[@]}" \
                   --precision "$precision" --json "$OUT/pipeline_$precision.json"
           done ;;
        d) step d 120 "$PY" benchmarks/bench_tags.py "${TAGS_ARGS[@]}" --voc --batching grid mixed \
               --precisions fp32 tf32 bf16 --attentions exact fused --profile 15 ;;
        f) step f 60 "$PY" benchmarks/bench_attention.py "${ATTENTION_ARGS[@]}" ;;
        h) step h 60 "$PY" benchmarks/bench_host.py "${HOST_ARGS[@]}" ;;
        e) wait_build pydensecrf "$CRF_PID" 240
           step e 120 "$PY" benchmarks/bench_masks.py "${MASKS_ARGS[@]}" ;;
        *) note "unknown step $id (steps: a b c d e f h)" ;;
    esac
done
if [ -n "${MMCV_PID:-}" ]; then
    wait_build mmcv "$MMCV_PID" "$MMCV_WAIT"
    [ -f "$WORK/mmcv.ok" ] && step mmcv-import 60 "$PY" -c \
        'import mmcv, mmcv.ops, mmseg; print("mmcv", mmcv.__version__, "with ops; mmseg", mmseg.__version__)'
    # (g) stage 3: DeepLabV2-R101 iterations in fp32 against train_seg.py --amp, if the budget still allows
    [ -f "$WORK/mmcv.ok" ] && step g 150 "$PY" benchmarks/bench_train_seg.py --compare amp --iters 30 --repeats 1 \
        --config configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py
fi

# --- summary
{
    echo "# GPU session ($(basename "$REPO"), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    echo
    sed 's/^/    /' "$WORK/machine.txt"
    echo
    echo "build of pydensecrf: $(build_state pydensecrf)"
    [ -n "${MMCV_PID:-}" ] && echo "build of mmcv (nice 19, beside the steps): $(build_state mmcv)"
    echo "total: $((SECONDS - START)) s of a ${BUDGET} s budget"
    echo
    echo "| step | exit | s | command |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    for id in "${STEP_IDS[@]}"; do
        echo
        echo "## step $id (last 30 lines, warnings left out)"
        echo
        grep -v -e 'WARNING' -e '^\s*$' "$WORK/steps/$id.out" | tail -n 30 | sed 's/^/    /'
    done
} > "$SUMMARY"
cat "$SUMMARY"
