#!/usr/bin/env bash
# Memory-safety check of the kernels (docs/release.md). Builds copies of the source tree (never the
# checkout's own in-place build) with Cython bounds checks (FASTGRU_DEBUG_CYTHON=1: boundscheck,
# initializedcheck, -O0 -g) and runs tools/memcheck_driver.py -- GRU (reset after / before) and
# LSTM (with / without projection) forward + backward through fastgru.ops, the bidirectional
# kernels, the streaming steppers and the lane math, with and without lengths, float32 and
# float64, n_threads 1 and 2, at every SIMD level the CPU offers -- under
#   asan:     AddressSanitizer + UndefinedBehaviorSanitizer (FASTGRU_SANITIZE=address,undefined;
#             gcc's libasan preloaded into python, PYTHONMALLOC=malloc so every allocation is
#             seen; leak detection off: CPython keeps memory until exit by design). Every SIMD
#             level, including AVX-512, runs.
#   valgrind: valgrind memcheck over a plain debug build (valgrind's virtual CPU has no AVX-512,
#             so base and AVX2 run). CPython's own uninitialised-value reports and ld.so's
#             word-wise strncmp are suppressed (tools/valgrind-fastgru.supp); nothing that
#             starts in fastgru's kernels is.
# The asan mode also runs the whole test suite (tests/) under ASan+UBSan (MEMCHECK_PYTEST=0: not).
# Each checker first runs a canary (a deliberate out-of-bounds read, memcheck_driver.py --canary)
# that it must report, so a silently inactive checker cannot pass.
# Exits non-zero when the build fails, the driver fails or any memory error is reported.
#
# Usage: bash tools/memcheck.sh [asan|valgrind|all]     (default: all; "all" skips valgrind, with
#        a note, where it is not installed; "valgrind" then fails)
# Environment (optional):
#   MEMCHECK_DIR=DIR      work directory (default: build/memcheck); the copies are rebuilt each run
#   MEMCHECK_VALGRIND_QUICK=1   the driver's --quick shape set under valgrind (about half the time)
#   MEMCHECK_PYTHON=PY    a python that already has the build requirements (Cython, numpy, scipy,
#                         setuptools) and fastgru's dependencies; default: a venv made in
#                         MEMCHECK_DIR/venv from PyPI (kept between runs)
set -euo pipefail
trap 'echo "*** memcheck: failed at line $LINENO" >&2' ERR

MODE=${1:-all}
case "$MODE" in asan|valgrind|all) ;; *) echo "usage: $0 [asan|valgrind|all]" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/_release_lib.sh
source "$ROOT/tools/_release_lib.sh"
WORK=${MEMCHECK_DIR:-$ROOT/build/memcheck}
case "$WORK" in /|"$ROOT"|"$HOME") echo "refusing MEMCHECK_DIR=$WORK" >&2; exit 2 ;; esac
unset PYTHONPATH PYTHONHOME || true
mkdir -p "$WORK"
T_ALL=$(date +%s)
SUMMARY=()
stamp() { SUMMARY+=("$(printf '%-46s %5ds  %s' "$1" $(( $(date +%s) - $2 )) "$3")"); }

# --- a python with the build requirements -------------------------------------------------
t=$(date +%s)
if [[ -n "${MEMCHECK_PYTHON:-}" ]]; then
    PY=$MEMCHECK_PYTHON
else
    PY=$WORK/venv/bin/python
    if [[ ! -x "$PY" ]]; then
        python3 -m venv "$WORK/venv"
    fi
    # build-system.requires + project.dependencies + the test extra of pyproject.toml
    mapfile -t REQS < <("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
    d = tomllib.load(open(sys.argv[1], "rb"))
    reqs = (d["build-system"]["requires"] + d["project"]["dependencies"]
            + d["project"]["optional-dependencies"]["test"])
except ImportError:  # Python 3.10: no tomllib
    reqs = ["setuptools>=68", "wheel", "Cython>=3.0.8,<4", "numpy>=1.25", "scipy>=1.11",
            "threadpoolctl>=3.1", "tqdm>=4.60", "pytest>=7", "scikit-learn>=1.1",
            "matplotlib>=3.5"]
print("\n".join(reqs))
EOF
    )
    "$PY" -m pip install -q "${REQS[@]}"
fi
"$PY" -c "import Cython, numpy, scipy, setuptools; print('python', __import__('sys').version.split()[0], 'Cython', Cython.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)"
stamp "build environment" "$t" "$PY"

build_copy() {  # build_copy DEST [extra env assignments]: in-place debug build of a copy
    local dest=$1
    shift
    copy_checkout "$ROOT" "$dest"
    (cd "$dest" && env FASTGRU_DEBUG_CYTHON=1 "$@" "$PY" setup.py build_ext --inplace) \
        > "$dest.build.log" 2>&1 || { tail -50 "$dest.build.log"; echo "build failed: $dest.build.log" >&2; exit 1; }
    # the debug flags and the Cython bounds checks are really in
    grep -q -- "-O0 -g" "$dest.build.log"
    grep -q "__Pyx_RaiseBufferIndexError" "$dest/src/fastgru/_kernels/_gru.c"
    # one extension module per kernel source
    [[ $(ls "$dest"/src/fastgru/_kernels/*.so | wc -l) -eq $(ls "$dest"/src/fastgru/_kernels/*.pyx | wc -l) ]]
}

FAIL=0

# --- AddressSanitizer + UndefinedBehaviorSanitizer -----------------------------------------
if [[ "$MODE" == asan || "$MODE" == all ]]; then
    echo "=== [memcheck] ASan+UBSan build (bounds checks, -O0 -g, -fsanitize=address,undefined)"
    t=$(date +%s)
    build_copy "$WORK/asan" FASTGRU_SANITIZE=address,undefined
    grep -q -- "-fsanitize=address,undefined" "$WORK/asan.build.log"
    stamp "asan: build" "$t" "$WORK/asan.build.log"
    LIBASAN=$(gcc -print-file-name=libasan.so)
    [[ -e "$LIBASAN" ]] || { echo "libasan not found (gcc -print-file-name=libasan.so)" >&2; exit 1; }
    # libstdc++ preloaded too: ASan intercepts __cxa_throw only if it is there at start-up (C++
    # extensions such as matplotlib's ft2font throw while they import)
    PRELOAD="$LIBASAN $(gcc -print-file-name=libstdc++.so)"
    ASAN_OPTS=detect_leaks=0:verify_asan_link_order=0:halt_on_error=1:exitcode=99:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1
    asan_run() {  # asan_run LOG ARGS...: the driver under ASan (python itself is not instrumented)
        local log=$1
        shift
        (cd "$WORK" && env LD_PRELOAD="$PRELOAD" PYTHONMALLOC=malloc PYTHONPATH="$WORK/asan/src" \
            ASAN_OPTIONS=$ASAN_OPTS UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            "$PY" "$WORK/asan/tools/memcheck_driver.py" "$@") > "$log" 2>&1
    }
    echo "=== [memcheck] canary: a deliberate out-of-bounds read must be reported"
    t=$(date +%s)
    if asan_run "$WORK/asan-canary.log" --canary; then
        echo "*** ASan missed the canary's out-of-bounds read: $WORK/asan-canary.log" >&2
        exit 1
    fi
    grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$WORK/asan-canary.log"
    grep -m1 -E "#0 .* in fg_mm" "$WORK/asan-canary.log"
    stamp "asan: canary" "$t" "reported, as it must be"
    echo "=== [memcheck] driver under ASan+UBSan ($LIBASAN)"
    t=$(date +%s)
    set +e
    asan_run "$WORK/asan.log"
    rc=$?
    set -e
    cat "$WORK/asan.log"
    if [[ $rc -ne 0 ]] || grep -q -E "ERROR: AddressSanitizer|runtime error:" "$WORK/asan.log"; then
        echo "*** ASan+UBSan run FAILED (exit $rc): $WORK/asan.log" >&2
        FAIL=1
        stamp "asan: driver" "$t" "FAILED (exit $rc)"
    else
        grep -q "^memcheck_driver: .* checks passed" "$WORK/asan.log"
        stamp "asan: driver" "$t" "clean: $(grep '^memcheck_driver' "$WORK/asan.log")"
    fi
    if [[ "${MEMCHECK_PYTEST:-1}" != 0 ]]; then
        # the whole test suite too, from a directory holding only the test sources; pytest
        # captures stderr, so the sanitizers write their reports to files
        echo "=== [memcheck] test suite under ASan+UBSan"
        t=$(date +%s)
        rm -rf "$WORK/asan-tests" "$WORK"/asan-report.* "$WORK"/ubsan-report.*
        copy_test_sources "$PY" "$WORK/asan" "$WORK/asan-tests"
        set +e
        (cd "$WORK/asan-tests" && env LD_PRELOAD="$PRELOAD" PYTHONMALLOC=malloc \
            PYTHONPATH="$WORK/asan/src" ASAN_OPTIONS=$ASAN_OPTS:log_path="$WORK/asan-report" \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path="$WORK/ubsan-report" \
            "$PY" -m pytest -p no:cacheprovider -q) > "$WORK/asan-pytest.log" 2>&1
        rc=$?
        set -e
        tail -1 "$WORK/asan-pytest.log"
        if [[ $rc -ne 0 ]] || ls "$WORK"/asan-report.* "$WORK"/ubsan-report.* >/dev/null 2>&1; then
            cat "$WORK"/asan-report.* "$WORK"/ubsan-report.* 2>/dev/null | head -80
            echo "*** test suite under ASan+UBSan FAILED (exit $rc): $WORK/asan-pytest.log" >&2
            FAIL=1
            stamp "asan: test suite" "$t" "FAILED (exit $rc)"
        else
            stamp "asan: test suite" "$t" "clean: $(tail -1 "$WORK/asan-pytest.log" | tr -d '=')"
        fi
    fi
fi

# --- valgrind memcheck ----------------------------------------------------------------------
if [[ "$MODE" == all ]] && ! command -v valgrind >/dev/null; then
    echo "=== [memcheck] valgrind is not installed (apt-get install valgrind): valgrind part SKIPPED" >&2
    stamp "valgrind" "$(date +%s)" "SKIPPED: valgrind not installed"
elif [[ "$MODE" == valgrind || "$MODE" == all ]]; then
    command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
    echo "=== [memcheck] debug build for valgrind (bounds checks, -O0 -g)"
    t=$(date +%s)
    build_copy "$WORK/valgrind"
    stamp "valgrind: build" "$t" "$WORK/valgrind.build.log"
    vg_run() {  # vg_run LOG ARGS...: the driver under valgrind memcheck
        local log=$1
        shift
        (cd "$WORK" && env PYTHONMALLOC=malloc PYTHONPATH="$WORK/valgrind/src" \
            OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1 \
            valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=yes \
            --num-callers=40 --suppressions="$ROOT/tools/valgrind-fastgru.supp" \
            --gen-suppressions=all --log-file="$log" \
            "$PY" "$WORK/valgrind/tools/memcheck_driver.py" "$@")
    }
    echo "=== [memcheck] canary: a deliberate out-of-bounds read must be reported"
    t=$(date +%s)
    if vg_run "$WORK/valgrind-canary.log" --canary; then
        echo "*** valgrind missed the canary's out-of-bounds read: $WORK/valgrind-canary.log" >&2
        exit 1
    fi
    grep -A1 "Invalid read" "$WORK/valgrind-canary.log" | grep -m1 "fg_mm_rows"
    stamp "valgrind: canary" "$t" "reported, as it must be"
    echo "=== [memcheck] driver under valgrind memcheck"
    t=$(date +%s)
    set +e
    vg_run "$WORK/valgrind.log" ${MEMCHECK_VALGRIND_QUICK:+--quick}
    rc=$?
    set -e
    grep -E "ERROR SUMMARY|^==[0-9]+== +(Invalid|Conditional|Use of|Syscall|Mismatched|Source and)" \
        "$WORK/valgrind.log" | sed 's/^==[0-9]*== *//' | sort | uniq -c
    if [[ $rc -ne 0 ]]; then
        echo "*** valgrind run FAILED (exit $rc): $WORK/valgrind.log" >&2
        FAIL=1
        stamp "valgrind: driver" "$t" "FAILED (exit $rc)"
    else
        stamp "valgrind: driver" "$t" "clean: $(grep -o 'ERROR SUMMARY: .*' "$WORK/valgrind.log" | tail -1)"
    fi
fi

echo
echo "=== [memcheck] summary"
printf '%s\n' "${SUMMARY[@]}"
printf '%-46s %5ds\n' "total" $(( $(date +%s) - T_ALL ))
if [[ $FAIL -ne 0 ]]; then
    echo "memcheck: FAILED" >&2
    exit 1
fi
echo "memcheck: OK"
