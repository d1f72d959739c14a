"""Entry point of the ``sam-mix`` command.

Sub-command modules each expose ``add_parser(subparsers)``, which registers the
command and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and
returning an exit code). This is the command's error boundary: errors in user input
(:class:`InputError`) and any unexpected exception print as one line (the file when known,
the stage, the exception type and message) and exit with code 2; ``--debug`` shows the
traceback instead. Usage errors (an unknown flag, a missing value, a bad choice) are one line too,
``sam-mix infer: error: unrecognized arguments: --foo``, exit 2 (:class:`OneLineParser`);
``--help`` keeps argparse's full usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn, Sequence

from sam_mix_monai import __version__
from sam_mix_monai.utils.boundary import UnexpectedError, to_input_error
from sam_mix_monai.utils.errors import InputError

# Sub-commands, in the order ``sam-mix --help`` lists them. A module that is not
# there yet (a later stage of the project) is skipped.
COMMANDS = (
    "phantom",
    "convert",
    "train",
    "evaluate",
    "infer",
    "export",
    "demo",
    "study",
)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``<prog>: error: <problem>``, exit 2.

    argparse's own ``error`` prints the whole usage first; the project's rule for bad input is one
    line naming the problem. Sub-command parsers inherit the class (``add_subparsers`` uses
    ``type(self)``), so ``prog`` names the sub-command.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line to stderr and exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser.

    Args:
        only: register just this sub-command (its module alone is imported, so that
            e.g. ``sam-mix phantom`` does not pay for torch); ``None`` registers all.
    """
    parser = OneLineParser(
        prog="sam-mix",
        description="SAM-Mix liver segmentation in abdominal CT (MONAI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    _add_verbosity(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"sam_mix_monai.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"sam_mix_monai.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    for command in sub.choices.values():  # also after the sub-command: sam-mix infer -q ...
        _add_verbosity(command, argparse.SUPPRESS)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    # SUPPRESS: a sub-command's unset flag must not overwrite the one given before it.
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug messages")
    parser.add_argument("--max-zip-size", type=float, default=default, metavar="GB",
                        help="largest total uncompressed size of a zipped input (default 2 GB)")
    parser.add_argument("--max-zip-members", type=int, default=default, metavar="N",
                        help="most files in a zipped input (default 10000)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sam-mix`` and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the sub-command's parser: "sam-mix infer: error: unrecognized arguments: --foo"
        subcommands = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
        subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    args.quiet = bool(getattr(args, "quiet", False))
    args.verbose = bool(getattr(args, "verbose", False))
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    # --debug: e.g. the traceback of each failed case of a batch (set on every call: main() may run
    # several times in one process)
    logging.getLogger("sam_mix_monai").setLevel(logging.DEBUG if args.debug else logging.NOTSET)
    try:
        from sam_mix_monai.data.zip_input import set_zip_limits

        set_zip_limits(getattr(args, "max_zip_size", None), getattr(args, "max_zip_members", None))
        return int(args.func(args) or 0)
    except InputError as e:
        if args.debug:
            raise
        print(f"sam-mix {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"sam-mix {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the boundary: no traceback without --debug
        if args.debug:
            raise
        err = to_input_error(e, getattr(e, "filename", None), args.command)
        hint = " (--debug shows the traceback)" if isinstance(err, UnexpectedError) else ""
        print(f"sam-mix {args.command}: error: {err}{hint}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
