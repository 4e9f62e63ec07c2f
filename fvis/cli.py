"""The ``fvis`` command line: a registry of commands (:mod:`fvis.commands`). Bad input: one clear
line on stderr (``fvis: error: ...``), exit status 2, no traceback and no usage block."""
from __future__ import annotations

import argparse
import os
import sys

from .allocator import tune_allocator
from .commands import COMMANDS
from .errors import FvisError


class _Formatter(argparse.HelpFormatter):
    """Help with every default shown (unless the text already names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with fvis's error convention: one ``fvis: error: ...`` line, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"fvis: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fvis", description="Optimization-based feature visualization.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.HELP))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()  # CPU steps reuse freed tensor memory (see fvis.allocator; FVIS_MALLOC=default: off)
    try:
        COMMANDS[args.command].run(args)
        sys.stdout.flush()
    except FvisError as e:
        print(f"fvis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fvis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fvis models | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
