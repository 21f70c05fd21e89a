"""The thread policy, in one place.

Rule: inside a fastgru kernel call all parallelism is fastgru's own OpenMP team of `n_threads`
threads, and the BLAS that the kernels call (scipy's, through cython_blas) is held at one thread
for the duration of the call, then restored. OpenBLAS's spin-waiting pool beside an OpenMP team
was measured here to make each step 29x slower (research/style-anchors.md, section 3).
The hold is done by the kernels themselves through OpenBLAS's own get/set-threads functions,
found once with threadpoolctl (two C calls per kernel call, which matters for streaming single
steps); with another BLAS, kernel_guard() falls back to a threadpoolctl limit around the call.

- n_threads=None: FASTGRU_NUM_THREADS, else OMP_NUM_THREADS, else the physical cores this
  process may run on. -1: all those cores. 1 when the build has no OpenMP.
- The team runs the big GEMMs split by rows and the recurrence split into tasks (direction,
  block of batch rows) that each run a whole time loop without per-step barriers; blocks are
  balanced by total sequence length. Tiny problems run on one thread (a team start costs
  microseconds).

threadpoolctl is built for BLAS/OpenMP calls from the main Python thread; fastgru calls from
several Python threads at once are safe but share the one BLAS thread setting.
"""
from __future__ import annotations

import bisect
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from fastgru._kernels import _runtime

_GUARD = {"enabled": os.environ.get("FASTGRU_BLAS_GUARD", "1") != "0"}
_lock = threading.Lock()
_depth = [0]


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (cgroup/affinity aware)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 1))
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "")
    v = raw.split(",")[0].strip()  # OMP_NUM_THREADS may list one count per nesting level
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        n = 0
    if not 1 <= n <= 4096:
        if raw not in _ENV_WARNED:
            _ENV_WARNED.add(raw)
            warnings.warn(f"{name}={raw!r} is not a thread count from 1 to 4096: ignored",
                          RuntimeWarning, stacklevel=2)
        return None
    return n


_ENV_WARNED: set[str] = set()


def default_n_threads() -> int:
    if not _runtime.openmp_enabled():
        return 1
    return _env_int("FASTGRU_NUM_THREADS") or _env_int("OMP_NUM_THREADS") or physical_cores()


def resolve(n_threads: int | None) -> int:
    """The team size for a call (n_threads already type-checked by _validation)."""
    if not _runtime.openmp_enabled():
        return 1
    if _FORK["child"]:
        if n_threads not in (None, 1) and not _FORK["warned"]:
            _FORK["warned"] = True
            warnings.warn("fastgru runs on one thread in this process: it was forked after "
                          "fastgru's OpenMP threads had started, and libgomp cannot start a "
                          "team in such a child (it would hang); use the 'spawn' or "
                          "'forkserver' start method for threaded workers", RuntimeWarning,
                          stacklevel=4)
        return 1
    n = default_n_threads() if n_threads is None else \
        physical_cores() if n_threads == -1 else int(n_threads)
    if n > 1:
        _FORK["team"] = True
    return n


# A child forked after the parent ran a team must stay serial (libgomp's team does not survive
# fork: the child's first parallel region waits forever for threads that no longer exist).
_FORK = {"team": False, "child": False, "warned": False}


def _after_fork_in_child() -> None:
    if _FORK["team"]:
        _FORK["child"] = True
        from fastgru._kernels import _stream

        _stream._set_step_rule(-1)  # steppers made before the fork: the calling thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Below this many floating-point operations a call runs on one thread.
SERIAL_FLOPS = 2.0e6


# cols mode (one or two sequences: the team shares every step) needs this many hidden units
# per thread to pay for its per-step synchronisation. At B = 2 on 2 threads it beat a row per
# thread by 1.07-1.46x (T = 500, H = 128-256, GRU/LSTM, inference and training): each thread
# streams half of W_hh instead of all of it. At B = 4 it lost (0.75-1.02x: the whole gx then
# makes a round trip through memory), at B = 8 more so.
COLS_MIN_UNITS = 48
COLS_MAX_B = 2


_EQUAL_PLANS: dict[tuple, tuple[int, np.ndarray, bool]] = {}


def plan_tasks(team: int, D: int, sorted_lengths: np.ndarray, N: int, flops: float,
               H: int = 0, cols_ok: bool = False) -> tuple[int, np.ndarray, bool]:
    """(team, tasks, cols): tasks is int32 (k, 3) of (direction, first row, end row) in sorted
    order; cols=True asks the kernel to share each step across the team instead (B <= 2,
    one direction, a variant that supports it).

    Directions run concurrently; each direction's rows are split into team // D blocks of
    about equal total length (so the threads finish together). Plans for batches of equal
    lengths are remembered (they depend on a few integers; streaming calls repeat them)."""
    B = len(sorted_lengths)
    if B and sorted_lengths[0] == sorted_lengths[-1]:
        key = (team, D, B, N, flops < SERIAL_FLOPS, H, cols_ok, COLS_MIN_UNITS, COLS_MAX_B)
        hit = _EQUAL_PLANS.get(key)
        if hit is None:
            hit = _plan_tasks(team, D, sorted_lengths, N, flops, H, cols_ok)
            hit[1].flags.writeable = False
            if len(_EQUAL_PLANS) > 256:
                _EQUAL_PLANS.clear()
            _EQUAL_PLANS[key] = hit
        return hit
    return _plan_tasks(team, D, sorted_lengths, N, flops, H, cols_ok)


def _balanced_bounds(sorted_lengths: np.ndarray, nblk: int) -> list[int]:
    """Bounds of nblk non-empty blocks of consecutive rows (2 <= nblk <= B) whose largest total
    length is as small as possible: a binary search on that total, each probe filling blocks
    greedily (which needs the fewest blocks for a cap). At S2's half-to-full lengths on 2
    threads the blocks hold 11411 / 11450 row-steps (11787 / 11074 when each block was cut at
    the first row past an equal share; 1.3x over the best at 8 threads in some draws)."""
    B = len(sorted_lengths)
    cum = [0, *np.cumsum(sorted_lengths).tolist()]  # cum[k]: total of the first k rows

    def fill(cap: int) -> list[int] | None:
        bounds = [0]
        while bounds[-1] < B and len(bounds) <= nblk:
            bounds.append(bisect.bisect_right(cum, cum[bounds[-1]] + cap) - 1)
        return bounds if bounds[-1] == B else None

    lo = max(int(sorted_lengths.max()), -(-cum[-1] // nblk))
    hi = lo
    while fill(hi) is None:  # an upper bound: doubling steps past the share
        hi += max(hi - lo, int(sorted_lengths.max()))
    while lo < hi:
        mid = (lo + hi) // 2
        if fill(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    bounds = fill(hi)
    assert bounds is not None
    while len(bounds) - 1 < nblk:  # fewer blocks were needed: split one (totals only drop)
        k = max((k for k in range(len(bounds) - 1) if bounds[k + 1] - bounds[k] > 1),
                key=lambda k: cum[bounds[k + 1]] - cum[bounds[k]])
        bounds.insert(k + 1, bounds[k + 1] - 1)
    return bounds


def _plan_tasks(team: int, D: int, sorted_lengths: np.ndarray, N: int, flops: float,
                H: int, cols_ok: bool) -> tuple[int, np.ndarray, bool]:
    B = len(sorted_lengths)
    if flops < SERIAL_FLOPS:
        team = 1
    nblk = max(1, min(B, team // D)) if team >= D else 1
    if nblk == 1:
        bounds = [0, B]
    else:
        bounds = _balanced_bounds(sorted_lengths, nblk)
    tasks = np.array([(d, bounds[k], bounds[k + 1]) for d in range(D) for k in range(nblk)],
                     dtype=np.int32)
    cols = bool(cols_ok and D == 1 and B <= COLS_MAX_B and team >= 2
                and H >= COLS_MIN_UNITS * team)
    if len(tasks) == 1 and N < 64 and not cols:
        team = 1  # one recurrence and a small input GEMM: a team would only wait
    return team, tasks, cols


@lru_cache(maxsize=1)
def _blas_controllers() -> list:
    """threadpoolctl controllers of the BLAS the kernels call (scipy's), cached."""
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    # scipy's wheels vendor OpenBLAS in site-packages/scipy.libs; numpy's own copy is in
    # numpy.libs and never runs inside a kernel. Other layouts: hold every BLAS.
    scipy_libs = [lib for lib in libs
                  if os.path.basename(os.path.dirname(lib.filepath)).startswith("scipy")]
    return scipy_libs or libs


def _register_c_hold() -> bool:
    """Give the kernels OpenBLAS's get/set-num-threads functions; False if not possible."""
    import ctypes

    from fastgru._kernels import _blas

    try:
        for lib in _blas_controllers():
            if lib.internal_api != "openblas" or getattr(lib, "threading_layer", "") != "pthreads":
                continue
            prefix, suffix = lib._find_affixes()
            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}")
            put = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}")
            get_addr = ctypes.cast(get, ctypes.c_void_p).value
            put_addr = ctypes.cast(put, ctypes.c_void_p).value
            if not get_addr or not put_addr:
                continue
            _blas.set_thread_functions(get_addr, put_addr)
            return True
    except Exception:  # unusual BLAS layouts: the threadpoolctl fallback still applies
        pass
    return False


_C_HOLD: list[bool | None] = [None]


def c_hold_active() -> bool:
    """True when the kernels hold the BLAS threads themselves (registered on first use)."""
    if _C_HOLD[0] is None:
        with _lock:
            if _C_HOLD[0] is None:
                _C_HOLD[0] = _register_c_hold()
    return bool(_C_HOLD[0]) and _GUARD["enabled"]


def kernel_guard():
    """Context for one kernel call: nothing when the kernels hold BLAS themselves, else a
    threadpoolctl limit to one BLAS thread."""
    if c_hold_active() or not _GUARD["enabled"]:
        return _NULL
    return blas_single_threaded()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL = _Null()


def set_blas_guard(enabled: bool) -> None:
    """Benchmarks only: turn the single-threaded-BLAS rule off to measure oversubscription."""
    from fastgru._kernels import _blas

    _GUARD["enabled"] = bool(enabled)
    if not enabled:
        _blas.set_thread_functions(0, 0)
    else:
        _C_HOLD[0] = None


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """Hold the kernels' BLAS at one thread for the duration of a kernel call."""
    if not _GUARD["enabled"]:
        yield
        return
    saved = []
    with _lock:
        _depth[0] += 1
        if _depth[0] == 1:
            for lib in _blas_controllers():
                n = lib.num_threads
                if n != 1:
                    lib.set_num_threads(1)
                    saved.append((lib, n))
            _saved_stack.append(saved)
    try:
        yield
    finally:
        with _lock:
            _depth[0] -= 1
            if _depth[0] == 0:
                for lib, n in _saved_stack.pop():
                    lib.set_num_threads(n)


_saved_stack: list = []
