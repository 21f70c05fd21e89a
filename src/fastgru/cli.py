"""The `fastgru` console command: `fastgru train`, `fastgru predict`, `fastgru bench`,
`fastgru info`.

Each subcommand lives in its own module (cli_train.py, cli_bench.py) and exposes
`add_arguments(parser)` and `run(args) -> int`. User mistakes end in a one-line error message
and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

SUBCOMMANDS = {
    "train": ("fastgru.cli_train", "train a GRU/LSTM sequence classifier"),
    "predict": ("fastgru.cli_predict", "predict with a trained model (texts or arrays)"),
    "bench": ("fastgru.cli_bench", "time fastgru against PyTorch / ONNX Runtime on this machine"),
    "info": ("fastgru.cli_info", "print version, OpenMP, SIMD and BLAS configuration"),
}


class UserError(Exception):
    """A mistake in the command line or the data: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgru", description="Fast GRU/LSTM on the CPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(modname).add_arguments(sp)
    return p


# a full disk, a quota, a read-only or forbidden place: the user's to fix, told in one line
_WRITE_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS,
                 errno.EACCES, errno.EPERM, errno.EFBIG}


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run_command(argv)
        finally:  # --help and SystemExit too: their text may still sit in the buffer
            sys.stdout.flush()  # a closed pipe shows here, not at exit where it can't be caught
    except BrokenPipeError:
        # The reader went away (`fastgru info | head -1`): the Python docs' recipe, stdout to
        # devnull so that the interpreter's own flush at exit does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured, replaced)
            pass
        return 1


def _run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(mod.run(args) or 0)
    except UserError as exc:
        print(f"fastgru {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # a diverged loss: the message carries the hint
        hint = " (--lr, --clipnorm)" if args.command == "train" else ""
        print(f"fastgru {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"fastgru {args.command}: error: not enough memory for this run: lower the "
              "sizes (--hidden, --embed-dim, --max-len, --batch-size)", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:  # anything else is a bug to see in full
            raise
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"fastgru {args.command}: error: cannot write{where}: {exc.strerror}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastgru {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m fastgru.cli`: run the imported module's main, so that the UserError the
    # subcommands raise (fastgru.cli.UserError) is the class caught there, not this copy's.
    from fastgru.cli import main as _main

    sys.exit(_main())
