"""`fastgru info`: the build and run-time configuration (fastgru.show_config)."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the configuration as JSON")


def run(args: argparse.Namespace) -> int:
    import fastgru

    if args.json:
        print(json.dumps(fastgru.config(), indent=1, default=str))
    else:
        fastgru.show_config()
    return 0
