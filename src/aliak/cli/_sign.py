"""``aliak sign``: sign a request with the credentials in the environment, or a profile.

The credentials come from the official SDK's ``ALIBABA_CLOUD_*`` variables, or with
``--profile NAME`` from that profile of ``~/.aliyun/config.json`` (else the section of
``~/.alibabacloud/credentials.ini``) -- never from an argument: an argument lands in
shell history and in every ``ps`` listing.
``--scheme`` picks V3 (``ACS3``, the default) or one of the older RPC and ROA signatures.
``--http FILE`` (``-``: stdout) writes the signed request as a raw HTTP/1.1 request,
which ``aliak verify FILE`` reads back byte for byte.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from aliak.canonical import canonical_query_string
from aliak.cli._console import Console
from aliak.cli._raw_http import format_http_request
from aliak.credentials import (
    ENV_ACCESS_KEY_ID,
    ENV_ACCESS_KEY_SECRET,
    ENV_SECURITY_TOKEN,
    CLIProfileCredentialsProvider,
    CredentialsProvider,
    CredentialsProviderChain,
    ProfileCredentialsProvider,
)
from aliak.request import Request
from aliak.signer import SCHEME_ALGORITHMS, Signer

__all__ = ["add_sign_command", "body_fields", "curl_command", "profile_provider", "wire_url"]

_SECURITY_TOKEN_HEADER = "x-acs-security-token"  # noqa: S105 - a header name
_SECURITY_TOKEN_PARAMETER = "SecurityToken"  # noqa: S105 - an RPC parameter name

# The command signs with HMAC only: an RSA private key is not a value for an environment
# variable one exports in a shell.
_CLI_ALGORITHMS = {
    scheme: [name for name in algorithms if "RSA" not in name]
    for scheme, algorithms in SCHEME_ALGORITHMS.items()
}


def _header(text: str) -> tuple[str, str]:
    """``Name: value`` (argparse type: a malformed header is a usage error)."""
    name, colon, value = text.partition(":")
    if not colon or not name or name != name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name, value.strip(" \t")


def wire_url(url: str, signed: Request) -> str:
    """The URL as sent: scheme and authority as given, the path as signed, and the
    canonical query (the signer's encoding, so what is sent is what was signed)."""
    parts = urlsplit(url)
    query = canonical_query_string(signed.query)
    return f"{parts.scheme}://{parts.netloc}{signed.path or '/'}" + (f"?{query}" if query else "")


def curl_command(signed: Request, url: str, *, data: bytes | None, data_file: str | None) -> str:
    """One shell-quoted curl command that sends ``signed`` byte for byte."""
    # --path-as-is: curl would otherwise squash /./ and /../, changing the signed path;
    # --globoff: [] and {} in a URL are curl globs otherwise.
    words = ["curl", "--globoff", "--path-as-is"]
    words += ["--head"] if signed.method == "HEAD" else ["-X", signed.method]
    for name, value in signed.headers.items():
        # curl drops a header given as "Name:"; "Name;" is how it sends an empty one.
        words += ["-H", f"{name}: {value}" if value else f"{name};"]
    if data and "content-type" not in signed.headers:
        # curl gives a body Content-Type: application/x-www-form-urlencoded unless told
        # otherwise; "Name:" removes it, so the body goes out as signed, with none.
        words += ["-H", "Content-Type:"]
    if data_file is not None and data:
        words += ["--data-binary", "@" + os.path.abspath(data_file)]
    elif data:
        text = data.decode("utf-8", "surrogateescape")
        # --data-binary @x would read the file x; --data-raw sends a leading @ as it is.
        words += ["--data-raw" if text.startswith("@") else "--data-binary", text]
    words.append(url)
    return " ".join(shlex.quote(word) for word in words)


def body_fields(body: bytes) -> dict[str, str]:
    """The body for JSON: ``Body`` as text when it is UTF-8, else its Base64, and
    ``BodyEncoding`` saying which (``utf-8`` or ``base64``)."""
    try:
        return {"Body": body.decode("utf-8"), "BodyEncoding": "utf-8"}
    except UnicodeDecodeError:
        return {"Body": base64.b64encode(body).decode("ascii"), "BodyEncoding": "base64"}


def _write_private(path: str, data: bytes) -> None:
    """``data`` to ``path``, created 0600: a signed request is a credential (it is
    accepted once, by anyone, within the date window)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def profile_provider(name: str) -> CredentialsProvider:
    """The profile ``name`` of the aliyun CLI's config.json, else of credentials.ini."""
    return CredentialsProviderChain(
        [
            lambda: CLIProfileCredentialsProvider(name),
            lambda: ProfileCredentialsProvider(name),
        ]
    )


def _body(args: argparse.Namespace) -> bytes:
    if args.data_file is not None:
        return Path(args.data_file).read_bytes()
    if args.data is not None:
        return bytes(args.data.encode("utf-8", "surrogateescape"))
    return b""


def _print_signed(
    signed: Request, url: str, body: bytes, args: argparse.Namespace, console: Console
) -> None:
    """The usual output: a curl command, the JSON object, or the request as text."""
    if args.curl:
        console.line(curl_command(signed, url, data=body, data_file=args.data_file))
    elif console.json_output:
        console.json(
            {
                "Method": signed.method,
                "Url": url,
                "Headers": [[name, value] for name, value in signed.headers.items()],
                **body_fields(body),
            }
        )
    else:
        console.line(f"{signed.method} {url}")
        for name, value in signed.headers.items():
            console.line(f"{name}: {value}")


def _sign(args: argparse.Namespace, console: Console) -> int:
    body = _body(args)
    if args.algorithm is not None and args.algorithm not in _CLI_ALGORITHMS[args.scheme]:
        args.subparser.error(
            f"--scheme {args.scheme} signs with {' or '.join(_CLI_ALGORITHMS[args.scheme])}, "
            f"not {args.algorithm}"
        )
    if args.http == "-" and args.curl:
        args.subparser.error("--http - writes the request to stdout; --curl cannot share it")
    if args.profile is None:
        signer = Signer.from_environment(scheme=args.scheme, algorithm=args.algorithm)
    else:
        signer = Signer(
            profile_provider(args.profile), scheme=args.scheme, algorithm=args.algorithm
        )
    request = Request.from_url(args.method, args.url, headers=args.header or (), body=body)
    signed = signer.sign(request, action=args.action, version=args.version)
    url = wire_url(args.url, signed)
    if _SECURITY_TOKEN_HEADER in signed.headers:
        console.warn(f"the {_SECURITY_TOKEN_HEADER} header printed is a credential")
    if any(name == _SECURITY_TOKEN_PARAMETER for name, _ in signed.query):
        console.warn(f"the {_SECURITY_TOKEN_PARAMETER} parameter printed is a credential")
    if args.http is not None:
        raw = format_http_request(signed)
        if args.http == "-":
            console.raw(raw)
            return 0
        _write_private(args.http, raw)
        if not console.json_output:
            console.note(f"aliak sign: wrote the signed request to {args.http} ({len(raw)} bytes)")
    _print_signed(signed, url, body, args, console)
    return 0


def add_sign_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    sign = commands.add_parser(
        "sign",
        parents=[common],
        help="sign a request with the ALIBABA_CLOUD_* credentials or a profile; print it, "
        "or a curl command",
        description=f"Sign a request (V3 ACS3, or the older RPC or ROA) with the credentials "
        f"in {ENV_ACCESS_KEY_ID}, {ENV_ACCESS_KEY_SECRET} and, for STS, {ENV_SECURITY_TOKEN}, "
        "or those of --profile; never from an argument. Prints the method and the URL as "
        "sent (canonical query, with RPC's Signature), then every header, Authorization "
        "included; with --json also the body (Body, BodyEncoding utf-8 or base64). "
        "--http FILE writes the request for `aliak verify FILE`.",
    )
    sign.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    sign.add_argument(
        "url", metavar="URL", help="http(s)://host[:port]/path?query, path percent-encoded"
    )
    data = sign.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="TEXT", help="the body, as UTF-8 text")
    data.add_argument("--data-file", metavar="PATH", help="the body, read from a file")
    sign.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        metavar="'NAME: VALUE'",
        help="a header to send; repeatable. Signed: content-type and x-acs-* (ACS3); "
        "Accept, Content-MD5, Content-Type, Date and x-acs-* (ROA); none (RPC)",
    )
    sign.add_argument("--action", metavar="ACTION", help="the API name (x-acs-action; RPC: Action)")
    sign.add_argument(
        "--version", metavar="VERSION", help="the API version (x-acs-version; RPC: Version)"
    )
    sign.add_argument(
        "--scheme",
        choices=list(_CLI_ALGORITHMS),
        default="ACS3",
        help="the signature: ACS3 (V3, the default), or the older RPC (query Signature) "
        "or ROA (Authorization: acs)",
    )
    sign.add_argument(
        "--algorithm",
        choices=list(dict.fromkeys(name for names in _CLI_ALGORITHMS.values() for name in names)),
        help="the signature algorithm, one of the scheme's (default ACS3-HMAC-SHA256 for "
        "ACS3, HMAC-SHA1 for RPC and ROA)",
    )
    sign.add_argument(
        "--profile",
        metavar="NAME",
        help="sign with profile NAME of ~/.aliyun/config.json (any of its modes: AK, StsToken, "
        "RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn, CredentialsURI), else the [NAME] "
        "section of ~/.alibabacloud/credentials.ini; instead of the environment variables",
    )
    sign.add_argument(
        "--curl",
        action="store_true",
        help="print one ready-to-run curl command instead (shell-quoted)",
    )
    sign.add_argument(
        "--http",
        metavar="FILE",
        help="also write the signed request as a raw HTTP/1.1 request (request line, "
        "headers, Content-Length, blank line, body) to FILE, created 0600, for "
        "`aliak verify FILE`; '-' writes it to stdout instead of the usual output",
    )
    sign.set_defaults(run=_sign, subparser=sign)
