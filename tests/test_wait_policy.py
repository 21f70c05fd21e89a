"""The OpenMP wait policy fastgru gives its runtime (fastgru._wait_policy): set while the runtime
starts, the caller's environment restored, the caller's own settings respected; and the
streaming step's idle-gap rule (a step after a long gap runs on the calling thread) gives the
same bits as the team."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgru
from fastgru import _step, _wait_policy
from fastgru._kernels import _stream

# the fastgru these tests import (a source tree built in place, or an installed wheel)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastgru.__file__)))
KEYS = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")
PROBE = ("import json, os, fastgru; print(json.dumps([fastgru.config()['omp_wait_policy'], "
         f"{{k: os.environ.get(k) for k in {KEYS!r}}}]))")


def _probe(_first="", **env):
    e = {k: v for k, v in os.environ.items()
         if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY", "FASTGRU_SPINCOUNT",
                      "OMP_DISPLAY_ENV")}
    e.update(env)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _first + PROBE], env=e, capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    policy, after = json.loads(r.stdout.strip().splitlines()[-1])
    return policy, after, r.stderr


OURS = "fastgru's: GOMP_SPINCOUNT=1000, KMP_BLOCKTIME=1"
# torch installed and fastgru on a runtime torch would share (a source build): the defaults
SHARED = _wait_policy._torch_would_share()
DEFAULT = OURS if not SHARED else _wait_policy.SHARED_WITH_TORCH


def test_default_policy_is_set_for_the_runtime_and_the_environment_restored():
    policy, after, _ = _probe()
    assert policy == DEFAULT
    assert SHARED == policy.startswith("the runtime's defaults: torch is installed")
    assert after == {"GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None, "OMP_WAIT_POLICY": None}
    policy, after, _ = _probe(FASTGRU_SPINCOUNT="1000")  # asked for: set even beside torch
    assert policy == OURS
    assert after == {"GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None, "OMP_WAIT_POLICY": None}


def test_importing_fastgru_first_leaves_torch_its_runtime_settings():
    """fastgru's kernels and torch share libgomp.so.1 in a source build: torch then gets
    whatever spin fastgru gave the runtime (1000 made its 2-thread steps 1.2-1.6x slower), so
    with torch installed fastgru gives none."""
    pytest.importorskip("torch")
    if not SHARED:
        pytest.skip("fastgru carries a private OpenMP runtime")
    if not fastgru.config()["openmp"]:
        pytest.skip("built without OpenMP")
    _, _, err = _probe("import torch; ", OMP_DISPLAY_ENV="verbose")
    _, _, err2 = _probe(OMP_DISPLAY_ENV="verbose")
    for e in (err, err2):
        if "GOMP_SPINCOUNT" not in e:
            pytest.skip("the OpenMP runtime is not libgomp")
        assert "GOMP_SPINCOUNT = '1000'" not in e


def test_fastgru_spincount_and_user_settings():
    policy, after, _ = _probe(FASTGRU_SPINCOUNT="5000")
    assert policy.startswith("fastgru's: GOMP_SPINCOUNT=5000")
    assert after["GOMP_SPINCOUNT"] is None
    policy, after, _ = _probe(OMP_WAIT_POLICY="ACTIVE")
    assert policy == "the user's: OMP_WAIT_POLICY=ACTIVE"
    assert after == {"GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None, "OMP_WAIT_POLICY": "ACTIVE"}
    policy, after, _ = _probe(GOMP_SPINCOUNT="123")
    assert policy == "the user's: GOMP_SPINCOUNT=123" and after["GOMP_SPINCOUNT"] == "123"


def test_runtime_loaded_earlier_is_reported_not_claimed():
    """torch's wheel ships libgomp.so.1: imported first, its runtime is the one the kernels
    use, with the settings it read then; config() must say so instead of claiming 1000."""
    pytest.importorskip("torch")
    probe = ("import json, os, torch; maps = open('/proc/self/maps').read(); "
             "had = sorted({l.split()[-1] for l in maps.splitlines() if 'libgomp' in l}); ")
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc/self/maps")
    policy, after, _ = _probe(probe)
    assert after["GOMP_SPINCOUNT"] is None
    shared = "was loaded before fastgru" in policy
    assert shared or policy == DEFAULT, policy
    # shared exactly when fastgru's kernels brought no libgomp of their own
    check = (probe + "import fastgru; maps = open('/proc/self/maps').read(); "
             "now = sorted({l.split()[-1] for l in maps.splitlines() if 'libgomp' in l}); "
             "print(json.dumps([had == now, {}]))")
    e = {k: v for k, v in os.environ.items() if k not in KEYS}
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", check], env=e, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    same = json.loads(r.stdout.strip().splitlines()[-1])[0]
    assert shared == same
    policy, _, _ = _probe(probe, GOMP_SPINCOUNT="77")  # the user's setting: reported as such
    assert policy == "the user's: GOMP_SPINCOUNT=77"


def test_libgomp_reads_the_count():
    if not fastgru.config()["openmp"]:
        pytest.skip("built without OpenMP")
    _, _, err = _probe(OMP_DISPLAY_ENV="verbose")
    if "GOMP_SPINCOUNT" not in err:
        pytest.skip("the OpenMP runtime is not libgomp")
    assert ("GOMP_SPINCOUNT = '1000'" in err) != SHARED
    _, _, err = _probe(OMP_DISPLAY_ENV="verbose", FASTGRU_SPINCOUNT="4321")
    assert "GOMP_SPINCOUNT = '4321'" in err


def test_step_wake_gap_follows_the_spins(monkeypatch):
    monkeypatch.setitem(_wait_policy._state, "spins", 1000.0)
    assert _wait_policy.step_wake_gap() == pytest.approx(1000 * _wait_policy.SECONDS_PER_SPIN)
    monkeypatch.setitem(_wait_policy._state, "spins", None)
    assert _wait_policy.step_wake_gap() == float("inf")
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert _wait_policy._user_spins() == 0.0
    monkeypatch.setenv("GOMP_SPINCOUNT", "infinite")
    assert _wait_policy._user_spins() == float("inf")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,I,H", [(1, 64, 256), (3, 40, 200), (1, 17, 301), (8, 64, 256),
                                   (5, 64, 256), (4, 256, 512), (3, 256, 512)])
def test_step_after_a_gap_gives_the_team_bits(cell, dtype, B, I, H):
    """The BLAS shapes (float64; float32 at B = 2-4) once rounded by slice width: one thread
    alone differed from the team in 1e-16 / 1e-7 of most values."""
    rng = np.random.default_rng(H)
    G = (3 if cell == "gru" else 4) * H
    w = [rng.uniform(-0.1, 0.1, s).astype(dtype) for s in [(G, I), (G, H), (G,), (G,)]]
    x, h, c = (rng.standard_normal(s).astype(dtype) for s in [(B, I), (B, H), (B, H)])
    st = (_step.GRUStepper if cell == "gru" else _step.LSTMStepper)(*w, n_threads=2)
    args = (x, h) if cell == "gru" else (x, h, c)
    try:
        _stream._set_step_rule(-1)  # every step on the calling thread
        alone = st.step(*args)
        _stream._set_step_rule(1)  # every step on the team
        team = st.step(*args)
        _stream._set_step_rule(0)  # the stepper's choice, many times
        chosen = [st.step(*args) for _ in range(200)]
    finally:
        _stream._set_step_rule(1)
    for out in [team] + chosen:
        for a, b in zip(alone if cell == "lstm" else [alone], out if cell == "lstm" else [out],
                        strict=True):
            assert np.array_equal(a, b)
