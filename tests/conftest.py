"""pytest configuration: environment hygiene and a header line describing the build."""
from __future__ import annotations

import os

import pytest

from helpers import HAVE_TORCH


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch):
    """Tests see the default thread policy regardless of the caller's environment."""
    monkeypatch.delenv("FASTGRU_NUM_THREADS", raising=False)
    yield


def pytest_configure(config):
    """Steps with n_threads > 1 use their team in tests: the stepper's own choice (one thread
    after an idle gap or when measured faster, _kernels/_stream.pyx) would otherwise take most
    test steps off it. tests/test_wait_policy.py checks the choice itself."""
    from fastgru._kernels import _stream

    _stream._set_step_rule(1)


def pytest_report_header(config):
    import fastgru

    c = fastgru.config()
    return (f"fastgru {c['fastgru']}: openmp={c['openmp']} simd={c['simd_level']} "
            f"cores={c['physical_cores']} torch={'yes' if HAVE_TORCH else 'no'} "
            f"FASTGRU_SIMD={os.environ.get('FASTGRU_SIMD', '')}")
