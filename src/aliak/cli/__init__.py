"""The ``aliak`` command.

``aliak demo`` signs the documented worked example (spec ``acs3-signature.md`` §9) and
prints each stage, labelled; it exits non-zero if any stage differs from the documented
value, so it doubles as a smoke test of an installation.

The other commands administer a store (``keys``, ``acl``, ``sts``, ``audit``), sign
(``sign``) and verify (``verify``, ``serve``). The store is the SQLite file given by
``--db``, else ``$ALIAK_DB``, else ``./aliak.db``. Every command takes ``--json`` for
scripts; without it, output is aligned text for people. Exit status: 0 done, 1 refused
(an ``AliakError``, printed as ``error: <Code>: <Message> (<detail>)``, or a store that
cannot be used), 2 a usage error. A failed command leaves the store as it was.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence

from aliak import __version__
from aliak.cli._acl import add_acl_commands
from aliak.cli._audit import add_audit_command
from aliak.cli._console import CommandFailed, Console
from aliak.cli._keys import add_keys_commands
from aliak.cli._roles import add_roles_commands
from aliak.cli._serve import add_serve_command
from aliak.cli._sign import add_sign_command
from aliak.cli._store import ENV_DB, store_path
from aliak.cli._sts import add_sts_commands
from aliak.cli._verify import add_verify_command
from aliak.demo import run_demo
from aliak.errors import AliakError

__all__ = ["ENV_ACTOR", "actor_name", "main"]

ENV_ACTOR = "ALIAK_ACTOR"

Command = Callable[[argparse.Namespace, Console], int]


def actor_name(option: str | None) -> str:
    """``--actor``, else ``$ALIAK_ACTOR``, else the OS user (``cli:<user>``), else
    ``aliak``: the name every change this command makes is recorded under."""
    if option:
        return option
    if os.environ.get(ENV_ACTOR):
        return os.environ[ENV_ACTOR]
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name for this uid (a bare container)
        return "aliak"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aliak", description="Alibaba Cloud V3 request signing and AccessKey verification."
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help=f"the SQLite store (default: ${ENV_DB}, else ./aliak.db); its master key is PATH.key",
    )
    parser.add_argument(
        "--actor",
        metavar="NAME",
        help=f"who makes the changes, for the audit trail (default: ${ENV_ACTOR}, else the "
        "OS user)",
    )
    parser.add_argument("--version", action="version", version=f"aliak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="sign the documented worked example and show each stage")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    add_keys_commands(commands, common)
    add_acl_commands(commands, common)
    add_roles_commands(commands, common)
    add_sts_commands(commands, common)
    add_sign_command(commands, common)
    add_verify_command(commands, common)
    add_serve_command(commands, common)
    add_audit_command(commands, common)
    return parser


def _run(command: Command, args: argparse.Namespace, console: Console) -> int:
    try:
        return command(args, console)
    except (AliakError, CommandFailed) as error:
        console.error(str(error))
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        console.error(f"{where}{error.strerror or error}")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(sys.stdout)
    command: Command | None = getattr(args, "run", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    args.db = store_path(args.db)
    args.actor = actor_name(args.actor)
    console = Console(json_output=args.json, out=sys.stdout, err=sys.stderr)
    try:
        return _run(command, args, console)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
