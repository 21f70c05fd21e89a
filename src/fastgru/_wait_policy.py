"""How the kernels' idle OpenMP threads wait: a short spin, then sleep.

Why: libgomp's default spins about 300,000 times (milliseconds here) at every barrier and
between parallel regions before a thread sleeps. When another process holds one of the cores, a
spinning thread keeps the core its team mate needs until the scheduler preempts it. Measured on
the 2-core development machine, `fastgru train` (digits, 2 threads) took 2.0-2.9 s beside one
busy process and 14-16 s beside a few, against 0.7 s on one thread; with 1000 spins (20-50 us
here; libgomp's own count when it has more threads than CPUs) it took 0.7-1.1 s, and quiet-machine
speed was unchanged within noise (README, Threads).

The runtime reads its settings once, when it starts: libgomp when the first kernel module loads
it, LLVM's libomp at its first call. So `before_openmp_starts()` puts them in the environment
around that moment and then restores the environment: child processes see the user's
settings, not ours. A user's
OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME is left alone; FASTGRU_SPINCOUNT sets the
count fastgru uses (300000 restores libgomp's default).

A runtime another library loaded first under the same name (PyTorch's wheel ships
`libgomp.so.1`, which the loader then hands to fastgru too) has read its settings already:
fastgru's spin does not apply there, and `describe()` says so (GOMP_SPINCOUNT=1000 in the
environment gets it back).

The catch: a runtime shared by name is shared in both directions. PyTorch's libtorch_cpu needs
`libgomp.so.1`; where fastgru's kernels link that same name (a source build; a wheel repaired
by auditwheel carries a private, renamed copy in fastgru.libs), a torch imported after fastgru
gets fastgru's short spin too, and its 2-thread small ops were measured 1.2-1.6x slower. So
where torch is installed and the runtime would be shared, fastgru leaves libgomp's defaults
(300,000 spins) unless FASTGRU_SPINCOUNT asks: importing fastgru never slows another library.

A streaming step after an idle gap longer than the spin runs on the calling thread (the team
is asleep; waking it costs more than the step): `step_wake_gap()` is that gap.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

SPINCOUNT = 1000
# Seconds one spin lasts, about (1000 spins outlasted a 20 us gap and not a 50 us one here).
SECONDS_PER_SPIN = 20e-9
_USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_state: dict[str, object] = {"policy": "not set", "spins": None}


def _spincount() -> int:
    v = os.environ.get("FASTGRU_SPINCOUNT", "").strip()
    if not v:
        return SPINCOUNT
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:  # a typo must not pass silently (as bad FASTGRU_NUM_THREADS warns)
        warnings.warn(f"FASTGRU_SPINCOUNT={v!r} is not a spin count (an integer >= 0): "
                      f"ignored, {SPINCOUNT} is used", RuntimeWarning, stacklevel=2)
        return SPINCOUNT
    return n


def _user_spins() -> float | None:
    """The spin count the user's own settings give libgomp, when they say (None: unknown)."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    if "GOMP_SPINCOUNT" in os.environ:
        v = os.environ["GOMP_SPINCOUNT"].strip().lower()
        if v == "infinite" or v == "infinity":
            return float("inf")
        try:
            return float(int(v))
        except ValueError:
            return None
    if policy == "passive":
        return 0.0
    if policy == "active":
        return float("inf")
    return None


_RUNTIME_NAMES = ("libgomp", "libomp", "libiomp")


def _loaded_runtimes() -> set[str] | None:
    """Paths of the OpenMP runtimes mapped into this process (None: cannot tell, not Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "/lib" in line}
    except OSError:
        return None
    return {p for p in paths if any(n in os.path.basename(p) for n in _RUNTIME_NAMES)}


@contextmanager
def before_openmp_starts() -> Iterator[None]:
    """Run the first kernel import (and first OpenMP call) inside this block."""
    before = _loaded_runtimes()
    try:
        yield from _set_policy()
    finally:
        after = _loaded_runtimes()
        if before and after is not None and not (after - before) \
                and not any(k in os.environ for k in _USER_KEYS):
            # no runtime of our own came in: the kernels share one that started earlier,
            # with the settings of that moment
            _state["spins"] = None
            _state["policy"] = ("the runtime's defaults: " + ", ".join(sorted(
                os.path.basename(p) for p in before)) + " was loaded before fastgru (by "
                "another library, e.g. torch) and had read its settings; set "
                "GOMP_SPINCOUNT=1000 before Python starts for fastgru's short spin")


DEFAULT_SPINS = 300000  # libgomp's count without OMP_WAIT_POLICY
SHARED_WITH_TORCH = ("the runtime's defaults: torch is installed and would share this OpenMP "
                     "runtime, which fastgru's short spin would slow for torch too "
                     "(FASTGRU_SPINCOUNT=1000 sets it anyway)")


def _private_runtime() -> bool:
    """Whether fastgru carries its own renamed OpenMP runtime (auditwheel's fastgru.libs)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fastgru.libs")
    try:
        return any(n.startswith(_RUNTIME_NAMES) for n in os.listdir(libs))
    except OSError:
        return False


def _torch_would_share() -> bool:
    """torch is installed and would use the runtime fastgru is about to start."""
    import importlib.util

    if _private_runtime():
        return False
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _set_policy() -> Iterator[None]:
    if any(k in os.environ for k in _USER_KEYS):
        _state["spins"] = _user_spins()
        _state["policy"] = "the user's: " + ", ".join(
            f"{k}={os.environ[k]}" for k in _USER_KEYS if k in os.environ)
        yield
        return
    if "FASTGRU_SPINCOUNT" not in os.environ and _torch_would_share():
        _state["spins"] = float(DEFAULT_SPINS)
        _state["policy"] = SHARED_WITH_TORCH
        yield
        return
    n = _spincount()
    added = {"GOMP_SPINCOUNT": str(n),
             # LLVM libomp: milliseconds a thread spins (default 200)
             "KMP_BLOCKTIME": "0" if n == 0 else "1"}
    for k, v in added.items():
        os.environ[k] = v
    _state["spins"] = float(n)
    _state["policy"] = f"fastgru's: GOMP_SPINCOUNT={n}, KMP_BLOCKTIME={added['KMP_BLOCKTIME']}"
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def step_wake_gap() -> float:
    """Idle seconds after which a streaming step skips the (sleeping) team: inf when unknown."""
    spins = _state["spins"]
    if spins is None:
        return float("inf")
    return float(spins) * SECONDS_PER_SPIN  # type: ignore[arg-type]


def describe() -> str:
    """The wait policy in effect, for show_config()."""
    return str(_state["policy"])
