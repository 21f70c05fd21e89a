#!/usr/bin/env bash
# cibuildwheel before-all on macOS: unpack LLVM's OpenMP runtime (libomp.dylib + omp.h), which
# Apple clang lacks, into PREFIX (default /tmp/fastgru-libomp). The package is conda-forge's
# llvm-openmp 11.1.0, the version scikit-learn pinned for its wheels: it was built for macOS 10.9
# (x86_64) and 11.0 (arm64), so delocate accepts it for wheels with MACOSX_DEPLOYMENT_TARGET=11.0
# (Homebrew's libomp is built for the runner's own macOS and delocate rejects it for older
# targets). pyproject.toml [tool.cibuildwheel.macos] points CPPFLAGS and LDFLAGS at PREFIX.
# The archive is checked against a pinned SHA-256 before it is unpacked.
set -euo pipefail

PREFIX=${1:-/tmp/fastgru-libomp}
case "$(uname -m)" in
    arm64)
        PKG=osx-arm64/llvm-openmp-11.1.0-hf3c4609_1.tar.bz2
        SHA256=29763e493e46801c416f2e75f20e9183719bde3b727d8983b1917a480b4076fe ;;
    x86_64)
        PKG=osx-64/llvm-openmp-11.1.0-hda6cdc1_1.tar.bz2
        SHA256=1ebfeee2af90bcedf6b39c7290244e2aec0bda01ecf81b0d8d78ed405480c21c ;;
    *)
        echo "cibw_macos_libomp.sh: unsupported machine $(uname -m)" >&2
        exit 1 ;;
esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
curl -fsSL --retry 3 -o "$TMP/llvm-openmp.tar.bz2" \
    "https://anaconda.org/conda-forge/llvm-openmp/11.1.0/download/$PKG"
echo "$SHA256  $TMP/llvm-openmp.tar.bz2" | shasum -a 256 --check
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
tar -xjf "$TMP/llvm-openmp.tar.bz2" -C "$PREFIX"
ls -l "$PREFIX/include/omp.h" "$PREFIX/lib/libomp.dylib"
