"""STS ``AssumeRole`` (``2015-04-01``) answered in-process, for callers a stored role trusts.

Behind :class:`~aliak.integrations.wsgi.AliakWSGIMiddleware`: the caller's signature,
key status, timestamp, nonce and network ACLs are the middleware's checks, done before
this app runs; what is left is STS's own decision (:meth:`aliak.KeyManager.assume_role_as`)
and the official response::

    {"RequestId": "...",
     "AssumedRoleUser": {"Arn": "acs:sts::<account>:assumed-role/<role>/<session>",
                         "AssumedRoleId": "<RoleId>:<session>"},
     "Credentials": {"SecurityToken": "...", "AccessKeyId": "STS....",
                     "AccessKeySecret": "...", "Expiration": "2026-12-07T12:00:00Z"}}

So the official credentials libraries (``RamRoleArn`` profiles, chained roles), pointed at
a server running this, get credentials that every aliak verifier of the same store
accepts. Parameters come from the query, and from a form body only when the signature
covers it; a parameter given twice is refused, never resolved by picking one. A session
``Policy`` is refused (``InvalidParameter``): aliak does not evaluate policies, and a
credential silently broader than the one asked for is worse than an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aliak import (
    AliakError,
    AssumedRole,
    InvalidDurationSeconds,
    InvalidParameter,
    KeyManager,
    MissingParameter,
    Verified,
    parse_query_string,
)
from aliak.integrations.http import error_response, new_request_id

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["STS_VERSION", "AssumeRoleApp", "assume_role_answer", "sts_parameters"]

STS_VERSION = "2015-04-01"
_PARAMETERS = frozenset({
    "RoleArn", "RoleSessionName", "DurationSeconds", "Policy", "ExternalId",
})  # fmt: skip
_FORM = "application/x-www-form-urlencoded"
_JSON = ("Content-Type", "application/json;charset=utf-8")


def sts_parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """AssumeRole's parameters out of decoded (name, value) pairs; twice is refused."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _PARAMETERS:
            if name in found:
                raise InvalidParameter(name, detail="given more than once")
            found[name] = value
    return found


def _duration(text: str | None) -> int | None:
    if text is None:
        return None
    # Digits only: int() would take " 900", "9_00" and "+900".
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise InvalidDurationSeconds(43_200, detail="not a whole number of seconds")
    return int(text)


def assume_role_answer(
    manager: KeyManager, verified: Verified, parameters: Mapping[str, str], *, request_id: str
) -> dict[str, Any]:
    """The official ``AssumeRole`` response for ``verified``'s principal, or raise the
    STS error (``NoPermission``, ``EntityNotExist.Role``, ``InvalidParameter.*``)."""
    role_arn = parameters.get("RoleArn")
    if not role_arn:
        raise MissingParameter("RoleArn")
    session_name = parameters.get("RoleSessionName")
    if not session_name:
        raise MissingParameter("RoleSessionName")
    if parameters.get("Policy"):
        raise InvalidParameter(
            "Policy", detail="aliak does not evaluate session policies: omit Policy"
        )
    duration = _duration(parameters.get("DurationSeconds"))
    options: dict[str, Any] = {} if duration is None else {"duration": duration}
    credential, record = manager.assume_role_as(
        verified.principal,
        role_arn,
        session_name=session_name,
        external_id=parameters.get("ExternalId") or None,
        caller_key_id=verified.access_key_id,
        **options,
    )
    expiration = credential.expiration
    if expiration is None:  # pragma: no cover - AssumeRole always sets one
        raise AliakError(detail="an STS credential without an expiration")
    return {
        "RequestId": request_id,
        "AssumedRoleUser": {
            "Arn": AssumedRole(record.role, session_name).arn,
            "AssumedRoleId": f"{record.role_id}:{session_name}",
        },
        "Credentials": {
            "SecurityToken": credential.security_token.reveal(),
            "AccessKeyId": credential.access_key_id,
            "AccessKeySecret": credential.secret.reveal(),
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


class AssumeRoleApp:
    """WSGI: ``AssumeRole`` requests (RPC or ACS3, action ``AssumeRole``, version
    ``2015-04-01``, path ``/``) answered here; every other request goes to ``app``.

    Mount it *inside* the verifying middleware: it only answers requests the middleware
    verified (``environ["aliak.verified"]``), and passes on anything else.
    """

    def __init__(self, manager: KeyManager, app: WSGIApplication) -> None:
        self.manager = manager
        self.app = app

    def __repr__(self) -> str:
        return f"AssumeRoleApp({self.manager!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        verified = environ.get("aliak.verified")
        if not (
            isinstance(verified, Verified)
            and verified.action == "AssumeRole"
            and verified.version == STS_VERSION
            and environ.get("PATH_INFO", "/") in ("", "/")
        ):
            return self.app(environ, start_response)
        request_id = new_request_id()
        host = environ.get("HTTP_HOST")
        try:
            answer = assume_role_answer(
                self.manager, verified, self._parameters(environ, verified), request_id=request_id
            )
        except AliakError as error:
            status, headers, payload = error_response(
                error, host=host if isinstance(host, str) else None, request_id=request_id
            )
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [payload]
        payload = json.dumps(answer, separators=(",", ":")).encode("utf-8")
        start_response(
            "200 OK",
            [
                _JSON,
                ("Content-Length", str(len(payload))),
                ("x-acs-request-id", request_id),
                ("Cache-Control", "no-store"),
            ],
        )
        return [payload]

    @staticmethod
    def _parameters(environ: WSGIEnvironment, verified: Verified) -> dict[str, str]:
        query = environ.get("QUERY_STRING", "")
        try:
            raw_query = query.encode("latin-1")
        except UnicodeEncodeError:
            raw_query = query.encode("utf-8", "surrogateescape")
        pairs = list(parse_query_string(raw_query))
        content_type = (environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()
        if content_type == _FORM and verified.body_signed:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            pairs += parse_query_string(environ["wsgi.input"].read(length))
        return sts_parameters(pairs)
