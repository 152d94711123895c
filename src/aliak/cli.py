"""The ``aliak`` command.

``aliak demo`` signs the documented worked example (spec ``acs3-signature.md`` §9) and
prints each stage, labelled; it exits non-zero if any stage differs from the documented
value, so it doubles as a smoke test of an installation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aliak.demo import run_demo

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aliak", description="Alibaba Cloud V3 request signing and AccessKey verification."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="sign the documented worked example and show each stage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(sys.stdout)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
