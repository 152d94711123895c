"""``aliak verify``: verify a captured raw HTTP request against the store.

It prints what a server would answer -- the :class:`~aliak.Verified` JSON, or the
Alibaba error body -- in both output modes (the JSON is the result); in text mode a
one-line summary goes to stderr as well, under ``--json`` a refusal's ``Code``,
``Message`` and ``Detail`` as one JSON object. A verified request claims its nonce in
the store, as a server would: the same capture verified again is a replay.

``--explain`` also shows what the verifier rebuilt from the bytes received -- the
canonical request and the string to sign, for each form the scheme accepts -- and which
check refused the request. It shows the client's signature, never a value only the key
could make (the server's expected signature) nor a credential (a security token is
masked), so it is no signing oracle.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import attrs

from aliak.canonical import string_to_sign
from aliak.cli._audit import parse_utc
from aliak.cli._console import Console
from aliak.cli._raw_http import RawHttpRequest, parse_http_request
from aliak.cli._store import open_store
from aliak.encoding import percent_encode
from aliak.errors import AliakError, InvalidAccessKeyIdAccessPolicyDenied
from aliak.integrations.http import error_response
from aliak.legacy import roa_canonical_resource
from aliak.request import Request
from aliak.schemes import (
    Presented,
    acs3_canonical_request,
    build_schemes,
    has_rpc_signature,
    is_form,
)
from aliak.timestamps import system_clock
from aliak.verifier import Verified, Verifier, VerifierSettings

__all__ = ["Explanation", "add_verify_command", "explain_request"]

# Which check of the verify flow (spec verification.md §2) refuses with each code.
_CHECKS = {
    "IncompleteSignature": "steps 1-2: Authorization, the required and the signed headers",
    "InvalidSignatureMethod": "step 1: the signature scheme and method",
    "MissingParameter": "step 2: a required header or parameter",
    "InvalidParameter": "steps 1-3: the form of a header or parameter",
    "InvalidTimeStamp.Format": "step 3: the date's form",
    "InvalidTimeStamp.Expired": "step 3: the date window",
    "MissingSecurityToken": "step 3: an STS AccessKey id without its security token",
    "PayloadTooLarge": "the body size limit",
    "InvalidSecurityToken.Malformed": "step 4: the security token",
    "InvalidAccessKeyId.NotFound": "step 5: the signature check (no key has this id)",
    "SignatureDoesNotMatch": "step 5: the signature check",
    "ContentMD5NotMatched": "step 5: the body against the signed Content-MD5",
    "InvalidAccessKeyId.Inactive": "step 6: the key's state",
    "Forbidden": "step 6: the leak restriction",
    "InvalidAccessKeyId.AccessPolicyDenied": "step 7: the network ACL",
    "InvalidSecurityToken.MismatchWithAccessKey": "step 8: the security token",
    "InvalidSecurityToken.Expired": "step 8: the security token's expiry or revocation",
    "SignatureNonceUsed": "step 9: the nonce claim (a replay)",
    "InternalError": "the store",
    "ServiceUnavailable": "the store",
}
# What each scheme's "canonical request" is: the signer's SigningResult.canonical_request.
_WHAT_IS_CANONICAL = {
    "ACS3": "the canonical request",
    "RPC": "the canonicalized query string: every parameter but Signature, sorted, encoded",
    "ROA": "the canonical resource: the path, then the query sorted, values raw; the string "
    "to sign adds the method, Accept, Content-MD5, Content-Type, Date and the x-acs-* headers",
}
_NO_SOURCE_IP = (
    "none given (--source-ip): a key or account with an enabled network policy is "
    "refused (fail closed, no address to check); with none enabled, no ACL applies"
)
_level = re.compile(r"by the (\w+)-level policy").search
_unprintable = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


# -- --explain ---------------------------------------------------------------------


def _scheme_name(request: Request, index: dict[str, list[str]]) -> str | None:
    """The scheme the verifier recognises the request by (its ``_recognise``, with every
    scheme enabled as in this command)."""
    values = index.get("authorization")
    if values is not None:
        first = values[0].lstrip(" ")
        if first.startswith("ACS3-"):
            return "ACS3"
        if first.startswith("acs "):
            return "ROA"
        return None
    if has_rpc_signature(request) or is_form(index):
        return "RPC"
    return None


def _mask(text: str, token: str | None) -> str:
    """A security token (a credential) hidden in every form a string to sign holds it:
    raw (an ACS3 or ROA header, an ROA resource), encoded once or twice (RPC)."""
    if token:
        for form in (percent_encode(percent_encode(token)), percent_encode(token), token):
            text = text.replace(form, "<security token>")
    return text


def _canonical_forms(name: str, presented: Presented, strings: tuple[str, ...]) -> list[str]:
    """What the signer's ``SigningResult.canonical_request`` holds, for each string to
    sign the scheme computed."""
    request = presented.request
    if name == "ACS3":
        canonical = acs3_canonical_request(presented)
        # The same text the verifier hashed, or say nothing rather than something else.
        return [canonical if string_to_sign(presented.digest, canonical) == strings[0] else ""]
    if name == "RPC":
        # METHOD&%2F&enc(query): only %25, %3D and %26 are escapes in the last part.
        return [unquote(text.split("&", 2)[2]) for text in strings]
    resources = [roa_canonical_resource(request.path, request.query)]
    if len(strings) > 1:
        resources.append(roa_canonical_resource(request.path, request.query, bare_empty=True))
    return resources


@attrs.define
class Explanation:
    """What the verifier rebuilds from a request before it checks the signature: the
    scheme, what the request presents, and each (canonical request, string to sign)
    pair the signature may be over (ROA and RPC accept two forms in some cases). Holds
    no secret, no security token, and no signature but the client's."""

    scheme: str | None = None
    algorithm: str | None = None
    access_key_id: str | None = None
    signed_headers: tuple[str, ...] = ()
    presented_signature: str | None = None
    body_signed: bool | None = None
    computed: list[tuple[str, str]] = attrs.field(factory=list)
    not_computed: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "Scheme": self.scheme,
            "Algorithm": self.algorithm,
            "AccessKeyId": self.access_key_id,
            "SignedHeaders": list(self.signed_headers),
            "PresentedSignature": self.presented_signature,
            "BodySigned": self.body_signed,
            "CanonicalRequestIs": _WHAT_IS_CANONICAL.get(self.scheme or ""),
            "Computed": [
                {"CanonicalRequest": canonical, "StringToSign": text}
                for canonical, text in self.computed
            ],
            "NotComputed": self.not_computed,
        }


def explain_request(request: Request, settings: VerifierSettings) -> Explanation:
    """The :class:`Explanation` of ``request`` under ``settings``, built with the
    verifier's own scheme code. Needs no store, no key and no clock; never raises."""
    index: dict[str, list[str]] = {}
    for header, value in request.headers.items():
        index.setdefault(header.lower(), []).append(value)
    name = _scheme_name(request, index)
    if name is None:
        return Explanation(
            not_computed="no signature scheme recognised (no ACS3 or ROA Authorization "
            "header, no RPC Signature parameter): nothing to rebuild"
        )
    scheme = build_schemes(settings)[name]
    presented = Presented()
    presented.request = request
    presented.index = index
    try:
        scheme.read(presented, False)
        scheme.take_body(presented)
        strings = scheme.strings_to_sign(presented)
        canonicals = _canonical_forms(name, presented, strings)
    except AliakError as error:
        return Explanation(
            scheme=name,
            not_computed=f"the {name} signature's parts cannot be read, so the verifier "
            f"builds no string to sign: {error}",
        )
    except Exception as error:  # the verifier fails closed on these (InternalError)
        return Explanation(
            scheme=name, not_computed=f"{type(error).__name__} while reading the {name} request"
        )
    token = presented.token
    return Explanation(
        scheme=name,
        algorithm=presented.algorithm,
        access_key_id=presented.access_key_id,
        signed_headers=presented.signed_headers,
        presented_signature=presented.signature,
        body_signed=presented.body_signed,
        computed=[
            (_mask(canonical, token), _mask(text, token))
            for canonical, text in zip(canonicals, strings, strict=True)
        ],
    )


def _refusal(error: AliakError) -> dict[str, object]:
    return {
        "Check": _CHECKS.get(error.code, "the verify flow"),
        "Code": error.code,
        "Message": error.message,
        "Detail": error.detail,
    }


def _shown(text: str) -> str:
    """Request-derived text fit for a terminal: bytes that were not UTF-8 as ``\\xNN``,
    control characters (but the line ends) escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _unprintable.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def _json_safe(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def _print_explanation(
    console: Console,
    explained: Explanation,
    refused: dict[str, object] | None,
    source_ip: str | None,
) -> None:
    fields: dict[str, object] = {
        "scheme": explained.scheme,
        "algorithm": explained.algorithm,
        "access key id": explained.access_key_id,
        "signed headers": ";".join(explained.signed_headers) or None,
        "presented signature": explained.presented_signature,
        "body signed": explained.body_signed,
        "source ip": source_ip or _NO_SOURCE_IP,
    }
    console.fields(
        {name: _shown(value) if isinstance(value, str) else value for name, value in fields.items()}
    )
    console.line()
    if explained.not_computed is not None:
        console.line(_shown(explained.not_computed))
    computed = explained.computed
    if computed and explained.scheme in ("RPC", "ROA"):
        console.line(f"canonical request here: {_WHAT_IS_CANONICAL[explained.scheme]}")
    for number, (canonical, text) in enumerate(computed, 1):
        of = f" (form {number} of {len(computed)})" if len(computed) > 1 else ""
        console.line(f"canonical request{of}, as the verifier rebuilt it from the bytes received:")
        for line in _shown(canonical).split("\n"):
            console.line(f"    {line}")
        console.line(f"string to sign{of}:")
        for line in _shown(text).split("\n"):
            console.line(f"    {line}")
    console.line()
    if refused is None:
        console.line("result: every check passed")
    else:
        console.fields(
            {
                "refused by": refused["Check"],
                "code": refused["Code"],
                "message": _shown(str(refused["Message"])),
                "detail": None if refused["Detail"] is None else _shown(str(refused["Detail"])),
            }
        )
    console.line()


# -- the command -------------------------------------------------------------------


def _truthful(error: AliakError, source_ip: str | None) -> AliakError:
    """The refusal, its detail saying what happened when no source IP was given (the
    verifier's own reads "None denied by the key-level policy")."""
    if source_ip is None and isinstance(error, InvalidAccessKeyIdAccessPolicyDenied):
        found = _level(error.detail or "")
        policy = f"the {found.group(1)}-level network policy" if found else "a network policy"
        return InvalidAccessKeyIdAccessPolicyDenied(
            error.message,
            detail=f"no source IP was given (--source-ip) and {policy} is enabled: the "
            "verifier refuses a request it has no address to check (fail closed)",
        )
    return error


def _acl_note(verified: Verified) -> str:
    """What the network ACL did for a request verified without a source IP."""
    if verified.key_type == "sts":
        return "no --source-ip given; network ACLs do not apply to STS credentials"
    return (
        "no --source-ip given: the request passed because no network policy is enabled "
        "for this key or its account (with one enabled, a request without a source IP is "
        "refused)"
    )


def _check(
    args: argparse.Namespace, raw: RawHttpRequest
) -> tuple[Verified | None, AliakError | None, Explanation | None]:
    """Verify as a server would: the result or the refusal, and the explanation."""
    clock = system_clock if args.now is None else args.now.timestamp
    explained: Explanation | None = None
    with open_store(args.db) as store, Verifier(store, clock=clock) as verifier:
        try:
            request = raw.to_request()
            if args.explain:
                explained = explain_request(request, verifier.settings)
            return verifier.verify(request, source_ip=args.source_ip), None, explained
        except AliakError as error:
            if args.explain and explained is None:
                explained = Explanation(
                    not_computed="no request to rebuild: a server would refuse these bytes "
                    "as a request before any check (see the refusal)"
                )
            return None, _truthful(error, args.source_ip), explained


def _verify(args: argparse.Namespace, console: Console) -> int:
    raw = parse_http_request(_read_input(args.file))
    verified, refusal, explained = _check(args, raw)
    result: dict[str, object]
    if refusal is None:
        assert verified is not None
        result = verified.to_dict()
    else:
        _status, _headers, body = error_response(refusal, host=raw.host)
        result = json.loads(body)
    refused = None if refusal is None else _refusal(refusal)
    if explained is not None and console.json_output:
        explanation = {**explained.to_dict(), "Refused": refused, "SourceIp": args.source_ip}
        console.json({"Result": result, "Explain": _json_safe(explanation)})
    else:
        if explained is not None:
            _print_explanation(console, explained, refused, args.source_ip)
        console.json(_json_safe(result))
    if refusal is not None:
        if console.json_output:
            console.error_object(refusal.code, refusal.message, refusal.detail)
        else:
            console.note(f"aliak verify: refused: {_shown(str(refusal))}")
        return 1
    assert verified is not None
    if not console.json_output:
        console.note(
            f"aliak verify: verified: {verified.access_key_id} "
            f"({verified.principal.principal_name})"
        )
        if args.source_ip is None:
            console.note(f"aliak verify: {_acl_note(verified)}")
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
        "same request twice is a replay. `aliak sign --http FILE` writes such a file.",
    )
    verify.add_argument(
        "file", nargs="?", metavar="FILE", help="the request (default: stdin, also '-')"
    )
    verify.add_argument(
        "--source-ip",
        metavar="ADDR",
        help="the client address, for the network ACL (without it, a key or account with "
        "an enabled network policy is refused: there is no address to check)",
    )
    verify.add_argument(
        "--now",
        type=parse_utc,
        metavar="ISO",
        help="verify as of this UTC time (a request captured earlier); default: the clock",
    )
    verify.add_argument(
        "--explain",
        action="store_true",
        help="also print the canonical request and string to sign the verifier rebuilt, "
        "and which check refused the request (with --json: one object, "
        '{"Result": ..., "Explain": ...}); never the server\'s expected signature',
    )
    verify.set_defaults(run=_verify)
