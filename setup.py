"""Build the Cython kernels of fastgru.

Environment switches (all optional):
  FASTGRU_NO_OPENMP=1      build without OpenMP (everything still works, single-threaded)
  FASTGRU_DEBUG_CYTHON=1   bounds checks and -O0 -g, for valgrind / AddressSanitizer runs
  FASTGRU_SANITIZE=address add -fsanitize=address (with FASTGRU_DEBUG_CYTHON for best reports)
  FASTGRU_MARCH=native     opt-in -march=... (never the default: wheels must run on any x86-64)

SIMD comes from runtime dispatch in _kernels/_simd.h (AVX-512 / AVX2 / baseline clones of the
gate loops), not from -march, so a portable wheel still runs the wide kernels.
"""
import os
import shlex
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = os.path.join("src", "fastgru", "_kernels")
MODULES = ["_blas", "_runtime", "_gru", "_lstm", "_stream", "_rows"]


def _truthy(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """(compile, link) flags that enable OpenMP for this compiler, per platform."""
    ctype = compiler.compiler_type
    if ctype == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang takes OpenMP only through the preprocessor; libomp comes from the
        # environment (CPPFLAGS="-Xpreprocessor -fopenmp", LDFLAGS="-lomp"), as scikit-learn does.
        if "openmp" in os.environ.get("CPPFLAGS", ""):
            return [], []
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _compiles_with(compiler, cflags, ldflags):
    """True when a tiny OpenMP program compiles and links with these flags."""
    src = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1;
        }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "omp_check.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            objs = compiler.compile([path], output_dir=tmp, extra_postargs=cflags)
            # setuptools links executables with plain cc: LDFLAGS (macOS libomp) must be explicit
            extra = ldflags + shlex.split(os.environ.get("LDFLAGS", ""))
            compiler.link_executable(objs, os.path.join(tmp, "omp_check"), extra_postargs=extra)
        except Exception:  # any compiler or linker failure means "no OpenMP"
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        debug = _truthy("FASTGRU_DEBUG_CYTHON")
        if ctype == "msvc":
            cflags, ldflags = ["/O2"], []
        else:
            # fp-contract=off: FMAs only where the kernels write them (FG_FMA), so the AVX-512
            # and AVX2 clones of the gate loops give bit-identical results (tested).
            opt = ["-O0", "-g"] if debug else ["-O3"]
            cflags = opt + ["-ffp-contract=off", "-fno-math-errno", "-Wno-unused-function"]
            ldflags = []
            march = os.environ.get("FASTGRU_MARCH", "").strip()
            if march:
                cflags.append(f"-march={march}")
            san = os.environ.get("FASTGRU_SANITIZE", "").strip()
            if san:
                cflags += [f"-fsanitize={san}", "-fno-omit-frame-pointer"]
                ldflags += [f"-fsanitize={san}"]
        openmp = False
        if not _truthy("FASTGRU_NO_OPENMP"):
            oc, ol = _openmp_flags(self.compiler)
            if _compiles_with(self.compiler, oc, ol):
                cflags += oc
                ldflags += ol
                openmp = True
            else:
                print("fastgru: OpenMP not available; building single-threaded kernels",
                      file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + ldflags
            ext.define_macros = list(ext.define_macros or []) + [
                ("FASTGRU_BUILT_WITH_OPENMP", "1" if openmp else "0"),
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ]
        super().build_extensions()


def _extensions():
    import glob

    import numpy
    from Cython.Build import cythonize

    debug = _truthy("FASTGRU_DEBUG_CYTHON")
    # headers and .pxd files: a change to any of them rebuilds every kernel module
    depends = sorted(glob.glob(os.path.join(KERNEL_DIR, "*.h")) +
                     glob.glob(os.path.join(KERNEL_DIR, "*.pxd")))
    exts = [
        Extension(
            f"fastgru._kernels.{name}",
            [os.path.join(KERNEL_DIR, f"{name}.pyx")],
            include_dirs=[KERNEL_DIR, numpy.get_include()],
            depends=depends,
            libraries=[] if sys.platform == "win32" else ["m"],
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "initializedcheck": debug,
            "cdivision": True,
            "nonecheck": False,
            "embedsignature": True,
        },
        include_path=["src"],
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
