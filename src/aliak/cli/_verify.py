"""``aliak verify``: verify a captured raw HTTP request against the store.

It prints what a server would answer -- the :class:`~aliak.Verified` JSON, or the
Alibaba error body -- in both output modes (the JSON is the result); in text mode a
one-line summary goes to stderr as well. A verified request claims its nonce in the
store, as a server would: the same capture verified again is a replay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aliak.cli._audit import parse_utc
from aliak.cli._console import Console
from aliak.cli._raw_http import parse_http_request
from aliak.cli._store import open_store
from aliak.errors import AliakError
from aliak.integrations.http import error_response
from aliak.timestamps import system_clock
from aliak.verifier import Verified, Verifier

__all__ = ["add_verify_command"]


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _verify(args: argparse.Namespace, console: Console) -> int:
    raw = parse_http_request(_read_input(args.file))
    clock = system_clock if args.now is None else args.now.timestamp
    with open_store(args.db) as store, Verifier(store, clock=clock) as verifier:
        try:
            verified: Verified = verifier.verify(raw.to_request(), source_ip=args.source_ip)
        except AliakError as error:
            _status, _headers, body = error_response(error, host=raw.host)
            console.json(json.loads(body))
            if not console.json_output:
                console.note(f"aliak verify: refused: {error}")
            return 1
    console.json(verified.to_dict())
    if not console.json_output:
        console.note(
            f"aliak verify: verified: {verified.access_key_id} "
            f"({verified.principal.principal_name})"
        )
    return 0


def add_verify_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="verify a raw HTTP/1.1 request (a file or stdin) against the store",
        description="Parse a raw HTTP/1.1 request (request line, headers, blank line, body "
        "per Content-Length) and verify it as a server would; prints the Verified JSON "
        "(exit 0) or the Alibaba error body (exit 1). The nonce is claimed: verifying the "
        "same request twice is a replay.",
    )
    verify.add_argument(
        "file", nargs="?", metavar="FILE", help="the request (default: stdin, also '-')"
    )
    verify.add_argument("--source-ip", metavar="ADDR", help="the client address, for the ACL")
    verify.add_argument(
        "--now",
        type=parse_utc,
        metavar="ISO",
        help="verify as of this UTC time (a request captured earlier); default: the clock",
    )
    verify.set_defaults(run=_verify)
