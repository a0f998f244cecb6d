"""The ``pocketqa`` command line: thin subcommands that parse, call one function, print.

Each command group lives in its own module (inference, calibrate, serving, training,
models, recipes) and registers its subcommands here. Every user mistake (bad file, bad flag value,
missing model) exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from pocketqa import __version__
from pocketqa.cli import calibrate, data, inference, models, recipes, serving, training
from pocketqa.errors import PocketQAError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


# The order of the commands in `pocketqa --help`.
GROUPS = (inference, calibrate, data, serving, training, models, recipes)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pocketqa", description="Compact extractive question answering (SQuAD 2.0).")
    parser.add_argument("--version", action="version", version=f"pocketqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None):
        # A warning is news for the user, not for a debugger: no source path, no code line.
        kind = "" if category is UserWarning else f" ({category.__name__})"
        print(f"pocketqa {args.command}: warning{kind}: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        return _run(args)


def _run(args) -> int:
    try:
        return args.func(args) or 0
    except PocketQAError as e:
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # a missing optional extra; the message names the pip command
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or vanished paths: the message names the file
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
