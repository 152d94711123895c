"""Credentials from STS: ``AssumeRole`` (a RAM role, signed by another credential) and
``AssumeRoleWithOIDC`` (RRSA on ACK, anonymous), and the answer both share.

The ``AssumeRole`` request is the official library's (``provider/ram_role_arn.py``): a
GET whose query carries the RPC V2 HMAC-SHA1 signature, built by the same pure functions
(:mod:`aliak.legacy`) the signer and the verifier use. ``AssumeRoleWithOIDC`` is a POST
with the OIDC token in the form body, as the Go library sends it, so the token stays out
of URLs and access logs.
"""

from __future__ import annotations

import calendar
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aliak.credentials._environment import (
    ENV_OIDC_PROVIDER_ARN,
    ENV_OIDC_TOKEN_FILE,
    ENV_ROLE_ARN,
    ENV_ROLE_SESSION_NAME,
    ENV_STS_REGION,
    ENV_VPC_ENDPOINT_ENABLED,
    env_flag,
)
from aliak.credentials._errors import (
    CredentialsNotFound,
    CredentialsSourceError,
    CredentialsUnavailable,
)
from aliak.credentials._http import Response, fetch, json_object
from aliak.credentials._refresh import RefreshingCredentialsProvider
from aliak.credentials._values import (
    AccessKey,
    Credential,
    CredentialsProvider,
    StaticCredentialsProvider,
    StsCredential,
)
from aliak.encoding import percent_encode
from aliak.errors import AliakError
from aliak.legacy import legacy_signing_key, rpc_string_to_sign
from aliak.timestamps import Clock, system_clock

__all__ = [
    "DEFAULT_DURATION_SECONDS",
    "MIN_DURATION_SECONDS",
    "STS_VERSION",
    "OIDCRoleArnCredentialsProvider",
    "RamRoleArnCredentialsProvider",
    "assume_role_query",
    "credential_from_answer",
    "parse_expiration",
    "resolve_sts_endpoint",
]

STS_VERSION = "2015-04-01"
DEFAULT_DURATION_SECONDS = 3600
MIN_DURATION_SECONDS = 900
_STS_TIMEOUT = 10.0  # the official read timeout; connecting gets the same bound
_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# strptime alone takes unpadded fields and non-ASCII digits: one exact shape, as sent.
_expiration_shape = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z").fullmatch


def parse_expiration(text: object, *, source: str) -> datetime:
    """``2015-04-09T11:52:19Z`` (UTC, the one form STS, the metadata service and a
    credentials URI send) as an aware datetime."""
    if isinstance(text, str) and _expiration_shape(text):
        try:
            moment = time.strptime(text, _EXPIRATION_FORMAT)
        except ValueError:
            pass
        else:
            return datetime.fromtimestamp(calendar.timegm(moment), tz=timezone.utc)
    raise CredentialsUnavailable(
        source, detail="Expiration is not a UTC time like 2015-04-09T11:52:19Z"
    )


def credential_from_answer(answer: Mapping[str, Any], *, source: str) -> StsCredential:
    """``AccessKeyId``, ``AccessKeySecret``, ``SecurityToken`` and ``Expiration``, all
    required (the official library refuses an answer without any of them)."""
    fields = ("AccessKeyId", "AccessKeySecret", "SecurityToken")
    missing = [name for name in (*fields, "Expiration") if not answer.get(name)]
    if missing or not all(isinstance(answer[name], str) for name in fields):
        raise CredentialsUnavailable(
            source,
            detail=f"the answer lacks {', '.join(missing)}" if missing else "a field is not text",
        )
    try:
        return StsCredential(
            answer["AccessKeyId"],
            answer["AccessKeySecret"],
            answer["SecurityToken"],
            parse_expiration(answer["Expiration"], source=source),
        )
    except AliakError as error:
        if isinstance(error, CredentialsUnavailable):
            raise
        raise CredentialsUnavailable(source, detail=f"the answer is unusable: {error}") from None


def resolve_sts_endpoint(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    vpc: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The STS base URL: ``endpoint`` as given (a host means HTTPS), else
    ``sts[-vpc].<region>.aliyuncs.com`` with the region from ``region`` or
    ``ALIBABA_CLOUD_STS_REGION``, else the global ``sts.aliyuncs.com``."""
    env = os.environ if environ is None else environ
    if endpoint:
        return endpoint.rstrip("/") if "://" in endpoint else f"https://{endpoint}"
    use_vpc = env_flag(env, ENV_VPC_ENDPOINT_ENABLED) if vpc is None else vpc
    region = region or env.get(ENV_STS_REGION, "")
    if not region:
        return "https://sts.aliyuncs.com"
    return f"https://{'sts-vpc' if use_vpc else 'sts'}.{region}.aliyuncs.com"


def assume_role_query(
    credential: Credential,
    *,
    role_arn: str,
    role_session_name: str,
    duration_seconds: int,
    timestamp: str,
    nonce: str,
    policy: str | None = None,
    external_id: str | None = None,
) -> list[tuple[str, str]]:
    """The signed ``AssumeRole`` query, ``Signature`` last (pure: the clock and nonce come in)."""
    params = {
        "Action": "AssumeRole",
        "Format": "JSON",
        "Version": STS_VERSION,
        "DurationSeconds": str(duration_seconds),
        "RoleArn": role_arn,
        "RoleSessionName": role_session_name,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "Timestamp": timestamp,
        "SignatureNonce": nonce,
        "AccessKeyId": credential.access_key_id,
    }
    if policy:
        params["Policy"] = policy
    if external_id:
        params["ExternalId"] = external_id
    if isinstance(credential, StsCredential):
        params["SecurityToken"] = credential.security_token.reveal()
    key = legacy_signing_key("RPC-HMAC-SHA1", credential.secret.reveal())
    signature = key.sign(rpc_string_to_sign("GET", params.items()).encode("utf-8"))
    return [*params.items(), ("Signature", signature)]


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{percent_encode(name)}={percent_encode(value)}" for name, value in pairs)


def _timestamp(seconds: float) -> str:
    return time.strftime(_EXPIRATION_FORMAT, time.gmtime(seconds))


def _sts_answer(response: Response, *, source: str) -> StsCredential:
    answer = json_object(response, source=source)
    if response.status != 200:
        # STS's error body: Code, Message, and RequestId to quote to support.
        raise CredentialsUnavailable(
            source,
            detail=f"HTTP {response.status} {answer.get('Code', '')}: "
            f"{_without_string_to_sign(answer.get('Message', ''))}"
            f" (RequestId {answer.get('RequestId', '-')})",
        )
    credentials = answer.get("Credentials")
    if not isinstance(credentials, dict):
        raise CredentialsUnavailable(source, detail="the answer has no Credentials object")
    return credential_from_answer(credentials, source=source)


def _without_string_to_sign(message: object) -> str:
    """STS's message, cut before an echoed string to sign: SignatureDoesNotMatch quotes
    the query signed, and a chained role's query holds the source's security token."""
    text = str(message)
    cut = text.lower().find("string to sign")
    return text if cut < 0 else text[:cut].rstrip(" :,") + " [string to sign left out]"


def _check_duration(duration_seconds: int, *, source: str, field: str) -> int:
    if (
        not isinstance(duration_seconds, int)
        or isinstance(duration_seconds, bool)
        or duration_seconds < MIN_DURATION_SECONDS
    ):
        raise CredentialsSourceError(
            source, field, fix=f"give a whole number of seconds, at least {MIN_DURATION_SECONDS}"
        )
    return duration_seconds


def _required(value: str | None, *, source: str, field: str) -> str:
    if not value or not isinstance(value, str):
        raise CredentialsSourceError(source, field, fix="set it (a non-empty string)")
    return value


def _random_nonce() -> str:
    return uuid.uuid4().hex


class RamRoleArnCredentialsProvider(RefreshingCredentialsProvider):
    """Temporary credentials of a RAM role, from STS ``AssumeRole`` signed by ``credentials``
    (an :class:`~aliak.AccessKey`, an :class:`~aliak.StsCredential`, or a provider: a chained
    role signs with the previous role's credential, asked for anew at each refresh).

    ``sts_endpoint`` is a host (HTTPS) or a URL (``http://127.0.0.1:8080`` for a local STS);
    without it the region (``sts_region``, else ``ALIBABA_CLOUD_STS_REGION``) and
    ``enable_vpc`` (else ``ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED``) pick it, as in the official
    library. The role session name defaults to ``ALIBABA_CLOUD_ROLE_SESSION_NAME``, else
    ``aliak-<epoch seconds>``. Refreshed 15 minutes before expiry (see
    :class:`RefreshingCredentialsProvider`).
    """

    def __init__(
        self,
        credentials: Credential | CredentialsProvider,
        *,
        role_arn: str,
        role_session_name: str | None = None,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        policy: str | None = None,
        external_id: str | None = None,
        sts_endpoint: str | None = None,
        sts_region: str | None = None,
        enable_vpc: bool | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        nonce: Callable[[], str] = _random_nonce,
        timeout: float = _STS_TIMEOUT,
        origin: str = "RamRoleArnCredentialsProvider",
    ) -> None:
        super().__init__(clock=clock)
        env = os.environ if environ is None else environ
        self.source = f"STS AssumeRole ({origin})"
        self._base: CredentialsProvider = (
            StaticCredentialsProvider(credentials)
            if isinstance(credentials, AccessKey | StsCredential)
            else credentials
        )
        self._role_arn = _required(role_arn, source=origin, field="role_arn")
        self._role_session_name = (
            role_session_name or env.get(ENV_ROLE_SESSION_NAME) or f"aliak-{int(clock())}"
        )
        self._duration_seconds = _check_duration(
            duration_seconds, source=origin, field="duration_seconds"
        )
        self._policy = policy
        self._external_id = external_id
        self.endpoint = resolve_sts_endpoint(
            endpoint=sts_endpoint, region=sts_region, vpc=enable_vpc, environ=env
        )
        self._nonce = nonce
        self._timeout = timeout

    def fetch(self) -> Credential:
        query = assume_role_query(
            self._base.get_credential(),
            role_arn=self._role_arn,
            role_session_name=self._role_session_name,
            duration_seconds=self._duration_seconds,
            timestamp=_timestamp(self._clock()),
            nonce=self._nonce(),
            policy=self._policy,
            external_id=self._external_id,
        )
        response = fetch(
            "GET", f"{self.endpoint}/?{_encode(query)}", source=self.source, timeout=self._timeout
        )
        return _sts_answer(response, source=self.source)


class OIDCRoleArnCredentialsProvider(RefreshingCredentialsProvider):
    """Temporary credentials of a RAM role for an OIDC identity (RRSA on ACK): STS
    ``AssumeRoleWithOIDC``, anonymous, with the token file read anew at every refresh (the
    cluster rotates it). :meth:`from_environment` reads ``ALIBABA_CLOUD_ROLE_ARN``,
    ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN``, ``ALIBABA_CLOUD_OIDC_TOKEN_FILE`` and
    ``ALIBABA_CLOUD_ROLE_SESSION_NAME``."""

    def __init__(
        self,
        *,
        role_arn: str,
        oidc_provider_arn: str,
        oidc_token_file: str | os.PathLike[str],
        role_session_name: str | None = None,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        policy: str | None = None,
        sts_endpoint: str | None = None,
        sts_region: str | None = None,
        enable_vpc: bool | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        timeout: float = _STS_TIMEOUT,
        origin: str = "OIDCRoleArnCredentialsProvider",
    ) -> None:
        super().__init__(clock=clock)
        env = os.environ if environ is None else environ
        self.source = f"STS AssumeRoleWithOIDC ({origin})"
        self._role_arn = _required(role_arn, source=origin, field="role_arn")
        self._oidc_provider_arn = _required(
            oidc_provider_arn, source=origin, field="oidc_provider_arn"
        )
        self._token_file = Path(
            _required(os.fspath(oidc_token_file), source=origin, field="oidc_token_file")
        )
        self._role_session_name = (
            role_session_name or env.get(ENV_ROLE_SESSION_NAME) or f"aliak-{int(clock())}"
        )
        self._duration_seconds = _check_duration(
            duration_seconds, source=origin, field="duration_seconds"
        )
        self._policy = policy
        self.endpoint = resolve_sts_endpoint(
            endpoint=sts_endpoint, region=sts_region, vpc=enable_vpc, environ=env
        )
        self._timeout = timeout

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: Any
    ) -> OIDCRoleArnCredentialsProvider:
        """RRSA's variables; :class:`CredentialsNotFound` unless all three are set."""
        env = os.environ if environ is None else environ
        names = (ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE)
        missing = [name for name in names if not env.get(name)]
        if missing:
            raise CredentialsNotFound(
                missing[0], detail=f"RRSA needs all of {', '.join(names)} (environment variables)"
            )
        return cls(
            role_arn=env[ENV_ROLE_ARN],
            oidc_provider_arn=env[ENV_OIDC_PROVIDER_ARN],
            oidc_token_file=env[ENV_OIDC_TOKEN_FILE],
            environ=env,
            origin="the RRSA environment variables",
            **options,
        )

    def _token(self) -> str:
        try:
            token = self._token_file.read_text("utf-8").strip()
        except OSError as error:
            raise CredentialsSourceError(
                str(self._token_file),
                "",
                fix=f"the OIDC token file cannot be read ({error.strerror}); check the "
                "service account token volume",
            ) from None
        if not token:
            raise CredentialsSourceError(
                str(self._token_file), "", fix="the OIDC token file is empty"
            )
        return token

    def fetch(self) -> Credential:
        query = [
            ("Action", "AssumeRoleWithOIDC"),
            ("Format", "JSON"),
            ("Version", STS_VERSION),
            ("Timestamp", _timestamp(self._clock())),
        ]
        form = [
            ("RoleArn", self._role_arn),
            ("OIDCProviderArn", self._oidc_provider_arn),
            ("OIDCToken", self._token()),
            ("RoleSessionName", self._role_session_name),
            ("DurationSeconds", str(self._duration_seconds)),
        ]
        if self._policy:
            form.append(("Policy", self._policy))
        response = fetch(
            "POST",
            f"{self.endpoint}/?{_encode(query)}",
            source=self.source,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=_encode(form).encode("ascii"),
            timeout=self._timeout,
        )
        return _sts_answer(response, source=self.source)
