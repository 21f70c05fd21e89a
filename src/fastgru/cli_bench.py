"""`fastgru bench` (placeholder until the benchmark runner lands)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from fastgru.cli import UserError

    raise UserError("the benchmark runner is not built yet")
