"""The server side: one sans-I/O verify flow, driven by :class:`Verifier` and
:class:`AsyncVerifier`.

The check order is spec ``verification.md`` §2, written once in :meth:`_Flow.steps`:

1. parse ``Authorization``; 2. required headers present and signed; 3. ``x-acs-date``
format and window; 4. key lookup (one store call, a dummy key for unknown ids);
5. signature, compared in constant time; *only then* 6. key state and leak restriction;
7. network ACL (not for STS credentials, §6); 8. security token; 9. nonce claimed
atomically (or right after step 5 with ``claim_nonce_before_state_checks``); 10. last
use recorded in a batch.

Steps 1-3 need no store and no secret, so floods are refused cheaply; key existence is
disclosed only after step 5, at the same cost either way, and key state only to a
caller who proved they hold the secret.

The flow is a generator: where it needs the store it yields a step (:class:`LookUpKey`,
:class:`ReloadKeyring`, :class:`LoadPolicies`, :class:`ClaimNonce`, :class:`FlushUsage`)
and receives the answer. The sync shell performs a step with a plain call, the async
shell with ``await``; nothing else differs. A warm cache hit yields only the nonce
claim. Whatever escapes the flow or its I/O and is not an :class:`AliakError` (a
driver's exception) becomes ``InternalError``: the verifier fails closed; a store's own
refusal such as ``ServiceUnavailable`` stands as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any, ClassVar, Generic, Literal, NoReturn, TypeVar

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aliak.acl import (
    AclDecision,
    CompiledPolicy,
    IpAddress,
    compile_policy,
    evaluate_network_access,
    parse_source_ip,
)
from aliak.algorithms import VerifyingKey, get_algorithm
from aliak.credentials import STS_ID_PREFIX, Secret, is_sts_access_key_id
from aliak.encoding import percent_encode
from aliak.errors import (
    AccessDenied,
    AliakError,
    Forbidden,
    IncompleteSignature,
    InternalError,
    InvalidAccessKeyIdAccessPolicyDenied,
    InvalidAccessKeyIdInactive,
    InvalidAccessKeyIdNotFound,
    InvalidParameter,
    InvalidSecurityTokenExpired,
    InvalidSecurityTokenMismatch,
    InvalidSignatureMethod,
    InvalidTimeStampExpired,
    MissingSecurityToken,
    PayloadTooLarge,
    SignatureDoesNotMatch,
    SignatureNonceUsed,
)
from aliak.highrisk import (
    DEFAULT_HIGH_RISK_ACTIONS,
    HighRiskActions,
    HighRiskPredicate,
    HostServices,
    service_of_host,
)
from aliak.keyring import MasterKeyring, UnknownMasterKeyVersion
from aliak.legacy import RPC_PATH, legacy_verifying_key
from aliak.metrics import OTHER_CODE, REFUSAL_CODES, NoMetrics, VerifierMetrics
from aliak.model import (
    AssumedRole,
    KeyAlgorithm,
    KeyRecord,
    KeyStatus,
    Owner,
    UsageRecord,
    utc_from_timestamp,
)
from aliak.request import Body, Request
from aliak.requestlog import LoggingRequestLog, RequestLog, request_event
from aliak.schemes import (
    DEFAULT_SCHEMES,
    SCHEME_NAMES,
    Acs3Scheme,
    Presented,
    Scheme,
    build_schemes,
    has_rpc_signature,
    is_form,
    printable,
)
from aliak.storage.protocols import (
    AsyncStore,
    PolicyTarget,
    Store,
)
from aliak.sts import (
    StsClaims,
    StsValidator,
    open_security_token,
    open_security_token_reloaded,
)
from aliak.timestamps import ACS_DATE_FORMAT, Clock, format_acs_date, system_clock

__all__ = [
    "DEFAULT_ALLOWED_ALGORITHMS",
    "DEFAULT_HIGH_RISK_ACTIONS",
    "DEFAULT_MAX_BODY_SIZE",
    "AsyncVerifier",
    "HighRiskActions",
    "Verified",
    "Verifier",
    "VerifierSettings",
]

DEFAULT_ALLOWED_ALGORITHMS = frozenset({"ACS3-HMAC-SHA256", "ACS3-HMAC-SM3"})
# The largest body a verifier (and the middlewares) read by default: 10 MiB.
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024

# §3 nonce (our choice): 1-128 characters in 0x21-0x7E.
# Step 5's refusal, by "is the id unknown": chosen by lookup, not by a branch each way.
_SIGNATURE_CHECK_REFUSALS: tuple[type[SignatureDoesNotMatch | InvalidAccessKeyIdNotFound], ...] = (
    SignatureDoesNotMatch,
    InvalidAccessKeyIdNotFound,
)
# How many source addresses' canonical forms a verifier remembers.
_MAX_SOURCES = 4096
# Heads that passed precheck() and await their verify(), per process: bounded, the oldest
# dropped (a head whose body never came is simply forgotten).
_MAX_PRECHECKED = 256
# The id the dummy secret is sealed to: the usual length of an AccessKey id.
_DUMMY_ID = "LTAI" + "0" * 20
# Seconds a nonce is kept past the last instant its request's date is accepted.
_NONCE_MARGIN = 60
_is_nonce = re.compile(r"[\x21-\x7e]{1,128}").fullmatch
# The kinds whose key is a public key: an RSA verification, real or dummy.
_RSA_KINDS = frozenset({"ACS3-RSA-SHA256", "RPC-RSA-SHA256"})

_log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class VerifierSettings:
    """Every knob of the verifier, with the spec's defaults.

    - ``max_skew``: the ``x-acs-date`` window, both directions (exactly at it is accepted).
    - ``allowed_algorithms``: HMAC-SHA256 and HMAC-SM3 by default; add
      ``"ACS3-RSA-SHA256"`` to accept RSA keys.
    - ``require_action``: whether ``x-acs-action``/``x-acs-version`` must be present.
    - ``unsigned_headers_allowed``: ``x-acs-*`` headers a trusted proxy adds unsigned.
    - ``error_profile``: ``"alibaba"`` (exact codes) or ``"opaque"`` (one generic code;
      the precise reason stays on ``AccessDenied.reason``).
    - ``echo_string_to_sign``: put the server's string-to-sign in
      ``SignatureDoesNotMatch``; defaults to on for ``"alibaba"``, off for ``"opaque"``.
    - ``freshness``: seconds a key record or policy is cached; a state change made
      through any process sharing the store takes effect within it.
    - ``claim_nonce_before_state_checks``: consume the nonce right after the signature.
    - ``high_risk_actions``: what a leak-restricted key may not call: a
      :class:`~aliak.highrisk.HighRiskActions` table (Alibaba's by default;
      ``HighRiskActions.of_actions({...})`` for a self-hosted API's own), or a predicate
      ``(service | None, version, action) -> bool``.
    - ``service_name``: the service this verifier guards, for the high-risk list and
      last-used records. Trusted, unlike the request's ``host``.
    - ``host_services``: where one verifier guards several services, the server's own
      host-to-service mapping (an exact table, or
      :class:`~aliak.highrisk.AlibabaEndpoints`); a host it does not know names no
      service. With neither setting, the action alone decides the leak restriction.
    - ``allow_repeated_query_names``: accept ``?a=1&a=2``. Off by default: the spec
      sorts repeated values, so their order is not signed and can be swapped in transit.
    - ``max_body_size``: a body longer than this is refused (``PayloadTooLarge``, 413),
      a streamed one while it is read: 10 MiB by default, the middlewares' default too;
      ``None`` for no limit.
    - ``sts_revoked``: a hook for emergency revocation of live STS credentials (by
      principal, issue time, ...); a revoked credential reads as expired.
    - ``schemes``: the signature schemes accepted -- ``"ACS3"`` (V3), ``"RPC"`` and
      ``"ROA"`` (V2), all three by default as Alibaba's gateway accepts them. A request
      in another is refused with a message naming what was seen. The window
      (``max_skew``) is the same for every scheme: ``x-acs-date``, RPC's ``Timestamp``
      and ROA's ``Date`` alike. RPC's ``SHA256withRSA`` follows ``ACS3-RSA-SHA256`` in
      ``allowed_algorithms``.
    - ``rpc_paths``: the request paths an RPC signature is accepted at (``/`` by
      default): its string to sign names ``/`` whatever the path, so the path is not
      covered.
    - ``require_signed_body``: refuse a request whose signature does not cover its
      body -- an RPC request with a body that is not a form, an ROA request with a body
      and no ``Content-MD5``. Off by default, as the gateway accepts them;
      :attr:`Verified.body_signed` tells either way.
    """

    max_skew: timedelta = timedelta(minutes=15)
    allowed_algorithms: frozenset[str] = DEFAULT_ALLOWED_ALGORITHMS
    require_action: bool = True
    unsigned_headers_allowed: frozenset[str] = frozenset()
    error_profile: Literal["alibaba", "opaque"] = "alibaba"
    echo_string_to_sign: bool | None = None
    high_risk_actions: HighRiskActions | HighRiskPredicate = attrs.field(factory=HighRiskActions)
    freshness: float = 1.0
    usage_flush_interval: float = 60.0
    claim_nonce_before_state_checks: bool = False
    service_name: str | None = None
    host_services: HostServices | None = None
    allow_repeated_query_names: bool = False
    lenient_authorization: bool = True
    max_body_size: int | None = DEFAULT_MAX_BODY_SIZE
    cache_size: int = 10_000
    sts_revoked: Callable[[StsClaims], bool] | None = None
    schemes: frozenset[str] = DEFAULT_SCHEMES
    rpc_paths: frozenset[str] = frozenset({RPC_PATH})
    require_signed_body: bool = False

    def __attrs_post_init__(self) -> None:
        if self.error_profile not in ("alibaba", "opaque"):
            raise InvalidParameter("error_profile", detail="'alibaba' or 'opaque'")
        unknown = set(self.allowed_algorithms) - {
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SM3",
            "ACS3-RSA-SHA256",
        }
        if unknown:
            raise InvalidParameter("allowed_algorithms", detail=f"unknown: {sorted(unknown)}")
        unknown = set(self.schemes) - set(SCHEME_NAMES)
        if unknown or not self.schemes:
            raise InvalidParameter(
                "schemes", detail=f"a non-empty set of {', '.join(SCHEME_NAMES)}"
            )
        if self.max_skew <= timedelta(0) or self.freshness < 0:
            raise InvalidParameter("max_skew", detail="the window must be positive")

    @property
    def echoes_string_to_sign(self) -> bool:
        if self.echo_string_to_sign is None:
            return self.error_profile == "alibaba"
        return self.echo_string_to_sign


@attrs.frozen
class Verified:
    """A request that passed every check. Holds no secret.

    ``body`` is what the application should read: the bytes received, or, for a
    streamed request, a spooled copy that was hashed before anyone could act on it.
    ``scheme`` is the signature's (``ACS3``, ``RPC``, ``ROA``) and ``algorithm`` its
    method (``ACS3-HMAC-SHA256``, ``HMAC-SHA1``, ``SHA256withRSA``). ``body_signed`` is
    ``False`` when the signature does not cover the body: an RPC body that is not a form,
    an ROA body sent without ``Content-MD5``. ``signed_headers`` are the headers the
    signature covers (none for RPC).
    """

    access_key_id: str
    principal: Owner | AssumedRole
    key_type: Literal["permanent", "sts"]
    algorithm: str
    signed_headers: tuple[str, ...]
    action: str | None
    version: str | None
    nonce: str
    timestamp: datetime
    source_ip: str | None
    acl_rule: str | None
    body: Body = attrs.field(eq=False, repr=False)
    scheme: str = "ACS3"
    body_signed: bool = True

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, without the body."""
        principal: dict[str, str] = {"AccountId": self.principal.account_id}
        if isinstance(self.principal, AssumedRole):
            principal["Arn"] = self.principal.arn
            principal["RoleName"] = self.principal.role.name
            principal["RoleSessionName"] = self.principal.session_name
        elif hasattr(self.principal, "name"):
            principal["UserName"] = self.principal.name
        return {
            "AccessKeyId": self.access_key_id,
            "Principal": principal,
            "KeyType": self.key_type,
            "Algorithm": self.algorithm,
            "SignedHeaders": list(self.signed_headers),
            "Action": self.action,
            "Version": self.version,
            "Nonce": self.nonce,
            "Timestamp": self.timestamp.strftime(ACS_DATE_FORMAT),
            "SourceIp": self.source_ip,
            "AclRule": self.acl_rule,
            "Scheme": self.scheme,
            "BodySigned": self.body_signed,
        }


_Pending = Presented


class _KeyEntry:
    """What verifying with one key id needs: its record (``None`` for an unknown id or
    an STS credential), the key material, and the verifying keys built from it.

    Keys are built on first use of each algorithm, from the real material where the
    key can sign with that algorithm and from dummy material of the same kind where it
    cannot (or the id is unknown): the same work either way, so timing tells nothing.
    ``policies`` (key-level, account-level) are fetched on first need -- only after a
    valid signature -- and live as long as the entry, so they share its freshness.
    """

    __slots__ = ("claims", "keys", "policies", "public_key", "record", "secret", "token")

    def __init__(
        self,
        record: KeyRecord | None,
        *,
        secret: Secret | None = None,
        public_key: str | None = None,
        claims: StsClaims | None = None,
        token: str = "",
    ) -> None:
        self.record = record
        self.secret = secret
        self.public_key = public_key
        self.claims = claims
        self.token = token
        self.keys: dict[str, tuple[VerifyingKey, bool]] = {}
        self.policies: tuple[CompiledPolicy | None, CompiledPolicy | None] | None = None


_dummy_rsa_lock = threading.Lock()
_dummy_rsa_public: list[str] = []


def _dummy_rsa_public_key() -> str:
    # Generated once per process, on first need: an unknown id claiming RSA must cost
    # an RSA verification too.
    with _dummy_rsa_lock:
        if not _dummy_rsa_public:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _dummy_rsa_public.append(pem.decode())
        return _dummy_rsa_public[0]


class _Flow:
    """The check order, once, as a generator of I/O steps; and the pure checks it runs.

    Holds what both shells share: settings, the key cache, the usage buffer and the
    dummy key material of the unknown-id path. Never touches a store itself.
    """

    def __init__(
        self,
        settings: VerifierSettings,
        clock: Clock,
        keyring: Callable[[], MasterKeyring],
        sts_validator: StsValidator | None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._keyring = keyring
        self._sts_validator = sts_validator
        self._skew = settings.max_skew.total_seconds()
        # §5: a request dated t passes step 3 up to t + W inclusive, so its nonce must
        # outlive that instant. Kept until t + W + margin: the margin covers stores that
        # round times and a fleet whose clocks differ by less than it.
        self._nonce_lifetime = self._skew + _NONCE_MARGIN
        self._early_claim = settings.claim_nonce_before_state_checks
        self._echoes = settings.echoes_string_to_sign  # settings are frozen: read once
        # A random secret of a real secret's length: the unknown-id path does the same work.
        self._dummy_secret = Secret(os.urandom(15).hex())
        self._dummy_keyring = MasterKeyring.generate()
        # Bound to an id of the usual length: the associated data costs what a real one does.
        self._dummy_sealed = self._dummy_keyring.seal_secret(_DUMMY_ID, self._dummy_secret)
        self._schemes = build_schemes(settings)
        self._enabled = settings.schemes
        # The warm path (fast()) reads ACS3 and claims after step 8, as steps() does.
        acs3 = self._schemes["ACS3"]
        self._acs3 = (
            acs3
            if isinstance(acs3, Acs3Scheme) and "ACS3" in settings.schemes and not self._early_claim
            else None
        )
        self._accepted = _accepted(settings.schemes)
        high_risk = settings.high_risk_actions
        self._is_high_risk: HighRiskPredicate = (
            high_risk.matches if isinstance(high_risk, HighRiskActions) else high_risk
        )
        self._sources: dict[str, tuple[IpAddress, str]] = {}
        self._prechecked: dict[int, _Pending] = {}
        self._host_services: dict[str, str] = {}
        self.keys: _TtlCache[str, _KeyEntry] = _TtlCache(settings.freshness, settings.cache_size)
        self.usage = _UsageBuffer()
        self._next_flush = clock() + settings.usage_flush_interval
        self.refresh: Callable[[], None] | None = None  # the store's change check, if any

    # -- the order of checks --------------------------------------------------------

    def steps(  # noqa: PLR0912 - the check order, written once
        self,
        request: Request,
        source_ip: str | None,
        vpc_id: str | None,
        trace: _Trace | None = None,
    ) -> Generator[_Step, Any, Verified]:
        """Every check in the spec's order; yields a step wherever the store is needed.
        ``trace`` (only when metrics or a request log are on) is told how far it got."""
        now = self.clock()
        pending = self._read(request, now, source_ip, vpc_id, trace)
        pending.scheme.take_body(pending)
        key_id = pending.access_key_id
        claim = ClaimNonce(key_id, pending.nonce, now, pending.timestamp + self._nonce_lifetime)
        sts = pending.token is not None and is_sts_access_key_id(key_id)
        if self.refresh is not None:
            self.refresh()  # learn of changes made elsewhere before trusting the cache
        entry = self.keys.get(key_id, now)
        if isinstance(entry, _Missing) or (sts and not _same_token(entry, pending)):
            if trace is not None:
                trace.missed = True
            entry = yield from (self._sts_entry(pending) if sts else self._key_entry(key_id))
            self.keys.put(key_id, entry, now)
        elif trace is not None:
            trace.missed = False
        self.authenticate(pending, entry)
        if trace is not None:
            trace.entry = entry  # the signature is valid: a refusal may name the principal
        if not pending.body_signed and self.settings.require_signed_body:
            raise IncompleteSignature(
                detail=f"{pending.scheme.describe(request)} does not cover this body, and "
                "this verifier requires a signed body"
            )
        if self._early_claim and not (yield claim):  # claimed here, or after step 8
            raise _nonce_used(pending)
        record = entry.record
        if record is None:  # past authenticate, only an STS credential has no record
            claims = entry.claims
            assert claims is not None
            self.check_sts(claims, now)
            principal: Owner | AssumedRole = claims.principal
            decision = _NOT_APPLIED  # §6: no ACL for STS
        else:
            self.check_key_state(pending, record)
            if entry.policies is None:
                entry.policies = yield LoadPolicies(record)
            decision = self.check_network(pending, *entry.policies)
            self.check_no_token(pending)
            principal = record.owner
        if not self._early_claim and not (yield claim):
            raise _nonce_used(pending)
        if record is not None:
            service = pending.service or self._usage_service(request.host or "")
            self.usage.add(key_id, now, service, pending.source_ip)
            if now >= self._next_flush:
                self._next_flush = now + self.settings.usage_flush_interval
                records = self.usage.drain()
                if records:
                    yield FlushUsage(records)
        return self.verified(pending, principal, decision)

    def _key_entry(self, access_key_id: str) -> Generator[_Step, Any, _KeyEntry]:
        record = yield LookUpKey(access_key_id)
        try:
            return self.entry_for(record, self._keyring())
        except UnknownMasterKeyVersion:
            # Sealed under a master key this process has not loaded: another process
            # rotated it. Reload once, then fail closed.
            return self.entry_for(record, (yield _RELOAD_KEYRING))

    def _sts_entry(self, pending: _Pending) -> Generator[_Step, Any, _KeyEntry]:
        """Open the security token (no store read) and prepare its secret."""
        access_key_id, token = pending.access_key_id, pending.token
        assert token is not None
        if self._sts_validator is not None:
            claims = self._sts_validator.open(access_key_id, token)
        else:
            try:
                claims = open_security_token(self._keyring(), access_key_id, token)
            except UnknownMasterKeyVersion:
                # Sealed under a version this process has not loaded yet: reload once.
                keyring = yield _RELOAD_KEYRING
                claims = open_security_token_reloaded(keyring, access_key_id, token)
        return _KeyEntry(None, secret=claims.secret, claims=claims, token=token)

    # -- the warm path: steps 1-8 in one pass ---------------------------------------

    def fast(  # noqa: PLR0911, PLR0912 - each None is a fallback to steps()
        self, request: Request, source_ip: str | None, vpc_id: str | None
    ) -> tuple[_Pending, KeyRecord, AclDecision, float] | None:
        """Steps 1-8 of a warm ACS3 request -- a header layout read before (by this
        pass or by :meth:`warm_precheck` of its head), its key and policies in the
        cache, no security token, no usage flush due -- in one pass; the shell then
        claims the nonce (step 9) and calls :meth:`finish`. ``None`` when the request
        is not one of those, before anything is judged or kept: the shell runs
        :meth:`steps` from the start, which reads it the general way (and refuses what
        this pass passed over). A signature that does not match, a key's state and the
        ACL are refused here, by the methods :meth:`steps` uses, so an unknown id costs
        what a wrong signature does."""
        acs3 = self._acs3
        if acs3 is None:
            return None
        now = self.clock()
        if now >= self._next_flush:
            return None
        prechecked = self._prechecked.get(id(request.headers)) if self._prechecked else None
        if prechecked is None:
            pending = acs3.read_warm(request)
            if pending is None or not self._warm_head_passes(pending, now):
                return None
            self._place(pending, source_ip, vpc_id)
            pending.service = self._service(request)
        else:
            # Read warm at precheck (steps 1-3 passed then); the body must be one this
            # pass takes, or steps() takes the reading as it is.
            if getattr(prechecked, "plan", None) is None or not isinstance(request.body, bytes):
                return None
            found = self._prechecked_pending(request, now, source_ip, vpc_id, None)
            if found is None:
                return None  # not this head after all: read in full, as steps() would
            pending = found
            if not acs3.take_warm_body(pending, request.body):
                return None  # over the size limit: steps() reads the head again, refuses
        if self.refresh is not None:
            self.refresh()  # learn of changes made elsewhere before trusting the cache
        entry = self.keys.get(pending.access_key_id, now)
        if isinstance(entry, _Missing):
            return None
        key, usable = entry.keys.get(pending.key_kind) or self.verifying_key(
            entry, pending.key_kind
        )
        text = acs3.warm_string_to_sign(pending)
        valid = usable
        try:
            key.verify(text.encode("utf-8", "surrogateescape"), pending.signature)
        except SignatureDoesNotMatch:
            valid = False
        pending.matched = 0
        if not valid or pending.index["x-acs-content-sha256"][0].lower() != pending.payload_hash:
            self.judge_signature(pending, entry, text, valid, usable)
        record, policies = entry.record, entry.policies
        if record is None or policies is None:
            return None  # the policies are read once, the general way
        if record.status is not KeyStatus.ACTIVE or record.in_recycle_bin or record.leak_restricted:
            self.check_key_state(pending, record)
        return pending, record, self.check_network(pending, *policies), now

    def _warm_head_passes(self, pending: _Pending, now: float) -> bool:
        """Whether a warm reading passes what :meth:`prepare` judges after ``read``
        (the date window, the nonce's and identifiers' form, no security token, no STS
        id): ``False`` sends it the general way, which refuses it by name."""
        action, version = pending.action, pending.version
        return not (
            abs(now - pending.timestamp) > self._skew
            or _is_nonce(pending.nonce) is None
            or (action is not None and _is_identifier(action) is None)
            or (version is not None and _is_identifier(version) is None)
            or pending.token is not None
            or pending.access_key_id.startswith(STS_ID_PREFIX)  # is_sts_access_key_id
        )

    def warm_precheck(self, request: Request) -> _Pending | None:
        """:meth:`prepare` of a head (``head_only``) in a layout read before, in one
        pass; ``None`` for any other head, which the caller then prepares."""
        acs3 = self._acs3
        if acs3 is None:
            return None
        pending = acs3.read_warm(request, head_only=True)
        if pending is None or not self._warm_head_passes(pending, self.clock()):
            return None
        self._place(pending, None, None)
        pending.service = self._service(request)
        return pending

    def finish(
        self, pending: _Pending, record: KeyRecord, decision: AclDecision, now: float
    ) -> Verified:
        """Step 10 of :meth:`fast`'s request, its nonce claimed: the use, the result."""
        service = pending.service or self._usage_service(pending.request.host or "")
        self.usage.add(pending.access_key_id, now, service, pending.source_ip)
        return self.verified(pending, record.owner, decision)

    # -- steps 1-3: no store, no secret ---------------------------------------------

    def prepare(
        self,
        request: Request,
        now: float,
        source_ip: str | None,
        vpc_id: str | None,
        head_only: bool = False,
        *,
        into: _Pending | None = None,
    ) -> _Pending | None:
        """Steps 1-3, whatever the scheme; ``None`` when ``head_only`` and the head alone
        cannot tell (an RPC form body may hold the signed parameters). ``into``: the
        object to fill, for a caller that reads what was presented after a refusal."""
        pending = _Pending() if into is None else into
        pending.request = request
        self._place(pending, source_ip, vpc_id)
        index = request.headers._index
        pending.index = index
        scheme = self._recognise(request, index)
        pending.scheme = scheme
        if not scheme.read(pending, head_only):
            return None
        self._check_window(pending, now)
        nonce_field, action_field, version_field = scheme.fields
        if _is_nonce(pending.nonce) is None:
            raise InvalidParameter(nonce_field, detail="1-128 printable ASCII")
        action, version = pending.action, pending.version
        if action is not None and _is_identifier(action) is None:
            _refuse_identifier(action_field)
        if version is not None and _is_identifier(version) is None:
            _refuse_identifier(version_field)
        pending.service = self._service(request)
        if pending.token is None and is_sts_access_key_id(pending.access_key_id):
            # The secret of an STS credential travels in its token: nothing to check
            # against without it.
            raise MissingSecurityToken(detail=pending.access_key_id)
        return pending

    def _place(self, pending: _Pending, source_ip: str | None, vpc_id: str | None) -> None:
        """Where the request came from, as the ACL and the records will see it."""
        if source_ip is None:
            pending.source_ip = pending.source_address = None
        else:
            # One form per address (IPv4-mapped IPv6 as IPv4, no zone id): the ACL, the
            # result and the source-IP history all see the same text.
            pending.source_address, pending.source_ip = self._source(source_ip)
        pending.vpc_id = vpc_id

    def _check_window(self, pending: _Pending, now: float) -> None:
        if abs(now - pending.timestamp) > self._skew:
            raise InvalidTimeStampExpired(
                detail=f"{format_acs_date(pending.timestamp)} is outside +-{self._skew:.0f} s"
            )

    def remember_prechecked(self, pending: _Pending) -> None:
        """Keep what precheck() read of a head for the verify() of the same head with its
        body: steps 1-3 depend on the head alone, so they are not made twice."""
        remembered = self._prechecked
        if len(remembered) >= _MAX_PRECHECKED:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del remembered[next(iter(remembered))]
        remembered[id(pending.request.headers)] = pending

    def _read(
        self,
        request: Request,
        now: float,
        source_ip: str | None,
        vpc_id: str | None,
        trace: _Trace | None,
    ) -> _Pending:
        """Steps 1-3: made by precheck() for this head already, or made now."""
        if self._prechecked:
            pending = self._prechecked_pending(request, now, source_ip, vpc_id, trace)
            if pending is not None:
                return pending
        pending = self.prepare(
            request, now, source_ip, vpc_id, into=None if trace is None else trace.pending
        )
        assert pending is not None  # only a head-only read defers
        return pending

    def _prechecked_pending(
        self,
        request: Request,
        now: float,
        source_ip: str | None,
        vpc_id: str | None,
        trace: _Trace | None,
    ) -> _Pending | None:
        """What precheck() read of this request's head, if it read this very head (the
        same Headers object, the same method, host, path and query) -- taken, so used
        once -- with the date window judged again at ``now`` and the source placed."""
        pending = self._prechecked.pop(id(request.headers), None)
        if pending is None:
            return None
        head = pending.request
        if (
            head.headers is not request.headers
            or head.method != request.method
            or head.host != request.host
            or head.path != request.path
            or (head.query is not request.query and head.query != request.query)
        ):
            return None
        pending.request = request
        if trace is not None:
            trace.pending = pending  # what a refusal from here on reports
        self._place(pending, source_ip, vpc_id)
        self._check_window(pending, now)  # the body may have taken a while
        return pending

    def _recognise(self, request: Request, index: dict[str, list[str]]) -> Scheme:
        """Which scheme signed the request, by its shape; refused by name when that
        scheme is not enabled here, or when it is none this verifier knows."""
        values = index.get("authorization")
        if values is not None:
            first = values[0].lstrip(" ")
            if first.startswith("ACS3-"):
                name = "ACS3"
            elif first.startswith("acs "):
                name = "ROA"
            else:
                seen = first.partition(" ")[0]
                raise InvalidSignatureMethod(
                    f"Specified signature method is not supported: an Authorization of "
                    f"scheme {printable(seen)!r}, which this verifier does not know; "
                    f"it accepts {self._accepted}.",
                    detail="unknown Authorization scheme",
                )
        elif has_rpc_signature(request) or ("RPC" in self._enabled and is_form(index)):
            name = "RPC"
        else:
            raise IncompleteSignature(
                detail="Authorization: missing (and no RPC Signature parameter)"
            )
        scheme = self._schemes[name]
        if name not in self._enabled:
            raise InvalidSignatureMethod(
                f"Specified signature method is not supported: "
                f"{scheme.describe(request)}; this verifier accepts {self._accepted}.",
                detail=f"the {name} scheme is not enabled",
            )
        return scheme

    def _source(self, source_ip: str) -> tuple[IpAddress, str]:
        """The address and its canonical text; remembered (bounded), since clients come
        back from the same few addresses and ``str()`` of one costs more than parsing."""
        known = self._sources.get(source_ip)
        if known is None:
            address = parse_source_ip(source_ip)
            known = (address, str(address))
            if len(self._sources) >= _MAX_SOURCES:
                self._sources.clear()
            self._sources[source_ip] = known
        return known

    def _usage_service(self, host: str) -> str:
        """:func:`_service_of`, remembered (bounded) per host: a server sees a few."""
        service = self._host_services.get(host)
        if service is None:
            service = _service_of(host)
            if len(self._host_services) >= _MAX_SOURCES:
                self._host_services.clear()
            self._host_services[host] = service
        return service

    def _service(self, request: Request) -> str | None:
        """The service the request is for, as the server knows it (never the caller's
        word alone): the configured service, or the server's host mapping."""
        settings = self.settings
        if settings.service_name is not None:
            return settings.service_name
        if settings.host_services is not None:
            host = request.host or request.headers.get("host")
            return None if host is None else service_of_host(host, settings.host_services)
        return None

    # -- steps 4-5 ------------------------------------------------------------------

    def entry_for(self, record: KeyRecord | None, keyring: MasterKeyring) -> _KeyEntry:
        """The entry for a fetched record, or the dummy for ``None``. Every kind opens
        one sealed secret (an RSA key and an unknown id open the dummy's): the same
        decryption whether the id exists or not."""
        if record is None or record.algorithm is KeyAlgorithm.RSA:
            self._dummy_keyring.open_secret(_DUMMY_ID, self._dummy_sealed)
            public_key = None if record is None else record.public_key
            return _KeyEntry(record, public_key=public_key)
        assert record.sealed_secret is not None
        secret = keyring.open_secret(record.access_key_id, record.sealed_secret)
        return _KeyEntry(record, secret=secret)

    def verifying_key(self, entry: _KeyEntry, kind: str) -> tuple[VerifyingKey, bool]:
        """The entry's key for ``kind`` (an ACS3 algorithm or a legacy kind) and whether
        it is real: built on first use from the entry's material, or from dummy material
        of the same kind."""
        found = entry.keys.get(kind)
        if found is not None:
            return found
        if kind in _RSA_KINDS:
            material, usable = entry.public_key, entry.public_key is not None
            if material is None:
                material = _dummy_rsa_public_key()
        else:
            usable = entry.secret is not None
            secret = self._dummy_secret if entry.secret is None else entry.secret
            material = secret.reveal()
        key: VerifyingKey
        if kind.startswith("ACS3-"):
            key = get_algorithm(kind).verifying_key(material)
        else:
            key = legacy_verifying_key(kind, material)  # type: ignore[arg-type]
        found = (key, usable)
        entry.keys[kind] = found
        return found

    def authenticate(self, pending: _Pending, entry: _KeyEntry) -> None:
        """Step 5: rebuild what was signed as received, compare in constant time."""
        scheme = pending.scheme
        strings = scheme.strings_to_sign(pending)
        key, usable = self.verifying_key(entry, pending.key_kind)
        matched = False
        position = 0
        for text in strings:  # how many: the request's, never the key's
            try:
                key.verify(text.encode("utf-8", "surrogateescape"), pending.signature)
            except SignatureDoesNotMatch:
                position += 1
                continue
            matched = True
            pending.matched = position
            break
        self.judge_signature(pending, entry, strings[0], matched and usable, usable)

    def judge_signature(
        self, pending: _Pending, entry: _KeyEntry, first: str, valid: bool, usable: bool
    ) -> None:
        """Step 5's verdict: refuse a signature that is not ``valid`` (``first``, the
        first string to sign, is what may be echoed), then what the scheme checks of
        what the signature does not cover by itself."""
        scheme = pending.scheme
        echoed = _masked(first, pending.token) if self._echoes else None
        if not valid:
            # One path for both refusals, the reason worked out either way: an unknown
            # id costs what a wrong signature for a known one does.
            reason = scheme.mismatch_reason(pending)
            if not usable:
                reason = "the key cannot sign with the algorithm claimed"
            unknown = entry.record is None and entry.claims is None
            raise _SIGNATURE_CHECK_REFUSALS[unknown](
                echoed, detail=pending.access_key_id if unknown else reason
            )
        scheme.check_signed(pending, echoed)

    # -- steps 6-7: only after a valid signature --------------------------------------

    def check_key_state(self, pending: _Pending, record: KeyRecord) -> None:
        if record.status is not KeyStatus.ACTIVE:
            raise InvalidAccessKeyIdInactive(detail=f"{record.access_key_id} is Inactive")
        if record.in_recycle_bin:
            raise InvalidAccessKeyIdInactive(detail=f"{record.access_key_id} is in the bin")
        if record.leak_restricted:
            if pending.action is None and pending.scheme.name == "ROA":
                # An ROA call names its API by path; without x-acs-action there is no
                # telling it from a high-risk one: fail safe.
                raise Forbidden(
                    detail=f"{record.access_key_id} is leak-restricted and the ROA request "
                    "names no x-acs-action"
                )
            if self._is_high_risk(pending.service, pending.version, pending.action):
                raise Forbidden(detail=f"{record.access_key_id} is leak-restricted")

    def check_network(
        self,
        pending: _Pending,
        key_policy: CompiledPolicy | None,
        account_policy: CompiledPolicy | None,
    ) -> AclDecision:
        decision = evaluate_network_access(
            key_policy, account_policy, pending.source_address, pending.vpc_id
        )
        if not decision.allowed:
            raise InvalidAccessKeyIdAccessPolicyDenied(
                detail=f"{pending.source_ip} denied by the {decision.level}-level policy"
            )
        return decision

    def check_no_token(self, pending: _Pending) -> None:
        """Step 8 for a permanent key: it must not come with a security token."""
        if pending.token is not None:
            raise InvalidSecurityTokenMismatch(detail="a security token with a permanent key")

    def check_sts(self, claims: StsClaims, now: float) -> None:
        """Step 8, after a valid signature: expiry (server clock, no extra skew), revocation."""
        if now >= claims.expiration:
            raise InvalidSecurityTokenExpired(detail=f"expired at {claims.expiration}")
        revoked = self.settings.sts_revoked
        if revoked is not None and revoked(claims):
            raise InvalidSecurityTokenExpired(detail="revoked")

    # -- steps 9-10 -------------------------------------------------------------------

    def verified(
        self, pending: _Pending, principal: Owner | AssumedRole, decision: AclDecision
    ) -> Verified:
        # Positional: the fields in their declared order (cheaper than keywords).
        return Verified(
            pending.access_key_id,
            principal,
            "sts" if isinstance(principal, AssumedRole) else "permanent",
            pending.algorithm,
            pending.signed_headers,
            pending.action,
            pending.version,
            pending.nonce,
            utc_from_timestamp(pending.timestamp),
            pending.source_ip,
            decision.rule,
            pending.body,
            pending.scheme.name,
            pending.body_signed,
        )

    def refuse(self, error: Exception) -> None:
        """What the client is told of an exception out of the flow or its I/O. Returns
        when ``error`` stands as it is (the caller re-raises it), else raises what
        replaces it, with ``error`` as ``__cause__``: a refusal under the opaque
        profile becomes its one code; anything that is not an :class:`AliakError` -- a
        driver's exception, a stored row that does not parse -- becomes
        ``InternalError`` (fail closed). A store's own refusal (``ServiceUnavailable``,
        an ``InternalError``) and ``PayloadTooLarge`` stand in every profile."""
        if not isinstance(error, AliakError):
            raise _failure(error) from error
        # A server failure and an oversized body say nothing about keys: they stand.
        if self.settings.error_profile == "opaque" and not isinstance(
            error, (InternalError, PayloadTooLarge)
        ):
            raise AccessDenied(error) from error


class _Missing:
    """The cache's "not there" (``None`` is a value worth caching: no policy, no key)."""


_MISSING = _Missing()
K = TypeVar("K")
V = TypeVar("V")


class _TtlCache(Generic[K, V]):
    """key -> (expires, value); bounded, oldest entries evicted first. Thread-safe enough:
    dict operations are atomic, and a lost race only repeats a store read."""

    __slots__ = ("_entries", "_size", "_ttl")

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K, now: float) -> V | _Missing:
        found = self._entries.get(key)
        if found is None or found[0] <= now:
            return _MISSING
        return found[1]

    def put(self, key: K, value: V, now: float) -> None:
        entries = self._entries
        if len(entries) >= self._size:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]
        entries[key] = (now + self._ttl, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class _UsageBuffer:
    """Last use per key and first/last seen per (key, source IP), merged in memory.

    ``add`` takes no lock: each use is appended to a deque (atomic), and the uses are
    merged into the pending records by whichever thread finds the deque long (a lock it
    only tries for, never waits on) and at ``drain``. A lock per request convoyed the
    threads of one verifier: 4 threads verified at 0.3 of one thread's rate."""

    __slots__ = ("_log", "_merging", "_pending")

    def __init__(self) -> None:
        self._log: deque[tuple[str, str | None, float, str]] = deque()
        self._merging = threading.Lock()
        self._pending: dict[tuple[str, str | None], list[Any]] = {}

    def add(self, access_key_id: str, now: float, service: str, source_ip: str | None) -> None:
        log = self._log
        log.append((access_key_id, source_ip, now, service))
        if len(log) >= _USAGE_MERGE_AT and self._merging.acquire(blocking=False):
            try:
                self._merge()
            finally:
                self._merging.release()

    def _merge(self) -> None:
        """Move every use logged so far into the pending records (the merge lock held)."""
        pending = self._pending
        popleft = self._log.popleft
        while True:
            try:
                access_key_id, source_ip, now, service = popleft()
            except IndexError:
                return
            key = (access_key_id, source_ip)
            entry = pending.get(key)
            if entry is None:
                pending[key] = [now, now, service]
            else:
                entry[0] = min(entry[0], now)
                if now >= entry[1]:
                    entry[1] = now
                    entry[2] = service

    def drain(self) -> list[UsageRecord]:
        with self._merging:
            self._merge()
            pending, self._pending = self._pending, {}
        return [
            UsageRecord(
                access_key_id=key_id,
                used_at=last,
                service_name=service,
                source_ip=ip,
                first_used_at=first,
            )
            for (key_id, ip), (first, last, service) in pending.items()
        ]


# Uses logged before a verifying thread merges them (bounds the log between flushes).
_USAGE_MERGE_AT = 1024


_NOT_APPLIED = AclDecision(allowed=True, level=None, rule=None)
_is_ip_host = re.compile(r"\[|[0-9.]+(?::[0-9]*)?$").match


def _service_of(host: str) -> str:
    """For last-used records only, where no service is configured: the first label of
    the host (``ecs`` for ``ecs.cn-hangzhou.aliyuncs.com``); an address names none. The
    caller chose the host, so no check ever rests on this."""
    if _is_ip_host(host):
        return "unknown"
    return host.partition(".")[0].partition(":")[0].lower()


def _same_token(entry: _KeyEntry, pending: _Pending) -> bool:
    # Constant-time: the cached token is a credential; a fast mismatch would leak it.
    token = pending.token or ""
    return entry.claims is not None and hmac.compare_digest(
        entry.token.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


# An action or a version is an identifier: printable ASCII, no space. Surrounding
# whitespace or a control character would let "RunInstances " pass a table lookup.
_is_identifier = re.compile(r"[\x21-\x7e]{1,256}").fullmatch


def _masked(to_sign: str, token: str | None) -> str:
    """The string to sign as it may be echoed (and logged): RPC and ROA strings hold the
    security token itself -- raw in an ROA header line or resource, encoded twice in an
    RPC query -- which is a credential; ACS3's holds only a hash."""
    if token:
        for form in (token, percent_encode(percent_encode(token))):
            to_sign = to_sign.replace(form, "<security token>")
    return to_sign


def _refuse_identifier(name: str) -> NoReturn:
    raise InvalidParameter(name, detail="printable ASCII without spaces, 1-256 characters")


def _accepted(schemes: frozenset[str]) -> str:
    """``ACS3 only``, ``ACS3 and ROA``, ``ACS3, RPC and ROA``: for refusal messages."""
    names = [name for name in SCHEME_NAMES if name in schemes]
    if len(names) == 1:
        return f"{names[0]} only"
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _nonce_used(pending: _Pending) -> SignatureNonceUsed:
    """Step 9's refusal: the store's atomic add-if-absent found the nonce already there."""
    return SignatureNonceUsed(detail=f"nonce {pending.nonce[:16]!r} was seen")


def _failure(error: Exception) -> InternalError:
    failure = InternalError(detail=f"{type(error).__name__} while verifying")
    failure.__cause__ = error
    return failure


# -- the I/O steps the flow yields ------------------------------------------------


class _Step:
    """One request for I/O: ``perform`` is the sync shell's way, ``aperform`` the async
    one's. An engine error escapes as it is; the shell's refusal block turns it into
    ``InternalError`` (fail closed)."""

    __slots__ = ()
    # What a failure of this step is counted under (aliak.metrics.STORE_OPERATIONS).
    operation: ClassVar[str] = ""

    def perform(self, verifier: Verifier) -> Any:
        raise NotImplementedError

    async def aperform(self, verifier: AsyncVerifier) -> Any:
        raise NotImplementedError


class LookUpKey(_Step):
    """Step 4: the record for an id, or ``None`` (one round trip either way)."""

    __slots__ = ("access_key_id",)
    operation = "get_key"

    def __init__(self, access_key_id: str) -> None:
        self.access_key_id = access_key_id

    def perform(self, verifier: Verifier) -> KeyRecord | None:
        return verifier._store.get_key(self.access_key_id)

    async def aperform(self, verifier: AsyncVerifier) -> KeyRecord | None:
        return await verifier._store.get_key(self.access_key_id)


class ReloadKeyring(_Step):
    """The master keyring re-read, after a value sealed under an unknown version."""

    __slots__ = ()
    operation = "reload_keyring"

    def perform(self, verifier: Verifier) -> MasterKeyring:
        return verifier._store.reload_keyring()

    async def aperform(self, verifier: AsyncVerifier) -> MasterKeyring:
        return await verifier._store.reload_keyring()


_Policies = tuple[CompiledPolicy | None, CompiledPolicy | None]


class LoadPolicies(_Step):
    """Step 7's input: the key-level and the account-level policy, compiled. Compiling
    is inside the step so that a stored policy that does not compile fails closed."""

    __slots__ = ("access_key_id", "account_id")
    operation = "get_network_policy"

    def __init__(self, record: KeyRecord) -> None:
        self.access_key_id = record.access_key_id
        self.account_id = record.owner.account_id

    def perform(self, verifier: Verifier) -> _Policies:
        store = verifier._store
        key_level = store.get_network_policy(PolicyTarget.key(self.access_key_id))
        account_level = store.get_network_policy(PolicyTarget.account(self.account_id))
        return compile_policy(key_level), compile_policy(account_level)

    async def aperform(self, verifier: AsyncVerifier) -> _Policies:
        store = verifier._store
        key_level = await store.get_network_policy(PolicyTarget.key(self.access_key_id))
        account_level = await store.get_network_policy(PolicyTarget.account(self.account_id))
        return compile_policy(key_level), compile_policy(account_level)


class ClaimNonce(_Step):
    """Step 9: the store's one atomic add-if-absent; ``True`` when the nonce was new."""

    __slots__ = ("access_key_id", "expires_at", "nonce", "now")
    operation = "claim_nonce"

    def __init__(self, access_key_id: str, nonce: str, now: float, expires_at: float) -> None:
        self.access_key_id = access_key_id
        self.nonce = nonce
        self.now = now
        self.expires_at = expires_at

    def perform(self, verifier: Verifier) -> bool:
        return verifier._store.claim_nonce(
            self.access_key_id, self.nonce, now=self.now, expires_at=self.expires_at
        )

    async def aperform(self, verifier: AsyncVerifier) -> bool:
        return await verifier._store.claim_nonce(
            self.access_key_id, self.nonce, now=self.now, expires_at=self.expires_at
        )


class FlushUsage(_Step):
    """Step 10: a batch of last-use records is due. Written in the background: a usage
    write never delays or fails the request that happened to make it due."""

    __slots__ = ("records",)
    operation = "record_usage"

    def __init__(self, records: list[UsageRecord]) -> None:
        self.records = records

    def perform(self, verifier: Verifier) -> None:
        verifier._flush_in_background(self.records)

    async def aperform(self, verifier: AsyncVerifier) -> None:
        verifier._flush_in_background(self.records)


_RELOAD_KEYRING = ReloadKeyring()


# -- metrics and the request log ------------------------------------------------------


class _Trace:
    """How far one observed verify got: what the request presented (filled by
    ``prepare``), whether the key cache was consulted and hit, the key entry once the
    signature proved valid, and the store call that failed, if one did."""

    __slots__ = ("entry", "failed", "missed", "pending")

    def __init__(self) -> None:
        self.pending = _Pending()
        self.missed: bool | None = None
        self.entry: _KeyEntry | None = None
        self.failed: str | None = None


def _presented(pending: _Pending, name: str) -> Any:
    # Presented is slotted and filled in order: what a refusal came before is unset.
    return getattr(pending, name, None)


class _Observer:
    """What a shell with metrics or a request log does after each outcome. Never raises:
    a failing hook or sink is logged and the request's outcome stands."""

    __slots__ = ("flow", "log", "metrics")

    def __init__(
        self, flow: _Flow, metrics: VerifierMetrics | None, log: RequestLog | None
    ) -> None:
        self.flow = flow
        self.metrics = metrics
        self.log = log

    def accepted(
        self,
        trace: _Trace,
        verified: Verified,
        *,
        request: Request,
        request_id: str | None,
        started: float,
    ) -> None:
        seconds = perf_counter() - started
        try:
            metrics = self.metrics
            if metrics is not None:
                if trace.missed is not None:
                    metrics.key_cache(not trace.missed)
                metrics.accepted(verified.scheme, seconds)
            if self.log is not None:
                pending = trace.pending
                host = request.host or request.headers.get("host")
                self.log.emit(
                    request_event(
                        event_time=self.flow.clock(),
                        access_key_id=verified.access_key_id,
                        principal=verified.principal,
                        action=verified.action,
                        version=verified.version,
                        host=host,
                        service=self._service(pending, host),
                        source_ip=verified.source_ip,
                        user_agent=request.headers.get("user-agent"),
                        request_id=request_id,
                        scheme=verified.scheme,
                        algorithm=verified.algorithm,
                        key_type=verified.key_type,
                        conceal=(pending.signature, pending.token or ""),
                        checked=True,
                    )
                )
        except Exception as error:
            _log.warning("aliak: the metrics hook or request log failed: %s", type(error).__name__)

    def refused(
        self,
        trace: _Trace,
        error: Exception,
        *,
        request: Request | None,
        source_ip: str | None,
        request_id: str | None,
        started: float,
    ) -> None:
        seconds = perf_counter() - started
        try:
            told = error if isinstance(error, AliakError) else _failure(error)
            reason = told.reason if isinstance(told, AccessDenied) else told
            pending = trace.pending
            scheme = _presented(pending, "scheme")
            metrics = self.metrics
            if metrics is not None:
                if trace.missed is not None:
                    metrics.key_cache(not trace.missed)
                if trace.failed is not None:
                    metrics.store_error(trace.failed)
                code = reason.code if reason.code in REFUSAL_CODES else OTHER_CODE
                metrics.refused(code, "none" if scheme is None else scheme.name, seconds)
            if self.log is not None:
                event = self._refusal_event(
                    trace,
                    told,
                    reason,
                    request=request,
                    source_ip=source_ip,
                    request_id=request_id,
                )
                self.log.emit(event)
        except Exception as failure:
            _log.warning(
                "aliak: the metrics hook or request log failed: %s", type(failure).__name__
            )

    def _refusal_event(
        self,
        trace: _Trace,
        told: AliakError,
        reason: AliakError,
        *,
        request: Request | None,
        source_ip: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        pending = trace.pending
        entry = trace.entry
        principal: Owner | AssumedRole | None = None
        key_type = None
        if entry is not None:  # set only once the signature was valid
            if entry.record is not None:
                principal, key_type = entry.record.owner, "permanent"
            elif entry.claims is not None:
                principal, key_type = entry.claims.principal, "sts"
        scheme = _presented(pending, "scheme")
        ip = _presented(pending, "source_ip") or source_ip
        host = None if request is None else request.host or request.headers.get("host")
        return request_event(
            event_time=self.flow.clock(),
            access_key_id=_presented(pending, "access_key_id"),
            principal=principal,
            action=_presented(pending, "action"),
            version=_presented(pending, "version"),
            host=host,
            service=self._service(pending, host),
            source_ip=ip,
            user_agent=None if request is None else request.headers.get("user-agent"),
            request_id=request_id,
            scheme=None if scheme is None else scheme.name,
            algorithm=_presented(pending, "algorithm"),
            key_type=key_type,
            error=told,
            reason=reason,
            conceal=(_presented(pending, "signature") or "", _presented(pending, "token") or ""),
        )

    def _service(self, pending: _Pending, host: str | None) -> str:
        service: str | None = _presented(pending, "service")
        return service if service is not None else self.flow._usage_service(host or "")

    def store_error(self, operation: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            try:
                metrics.store_error(operation)
            except Exception as error:
                _log.warning("aliak: the metrics hook failed: %s", type(error).__name__)


# -- the two shells -----------------------------------------------------------------


S = TypeVar("S", Store, AsyncStore)
R = TypeVar("R")


class _Shell(Generic[S, R]):
    """What both shells share: construction, settings, the flow, ``verify`` itself, and
    cache invalidation. A shell says only how it performs the flow's steps
    (``_verify`` and ``_drive``: the sync one returns the :class:`Verified`, the async
    one a coroutine of it) and how it writes last-use batches."""

    def __init__(
        self,
        store: S,
        *,
        settings: VerifierSettings | None = None,
        clock: Clock = system_clock,
        sts_validator: StsValidator | None = None,
        metrics: VerifierMetrics | None = None,
        request_log: RequestLog | bool | None = None,
        **options: Any,
    ) -> None:
        if options:
            settings = attrs.evolve(settings or VerifierSettings(), **options)
        self.settings = settings or VerifierSettings()
        self._store: S = store
        self._flow = _Flow(self.settings, clock, lambda: store.keyring, sts_validator)
        if type(metrics) is NoMetrics:
            metrics = None  # records nothing: no reason to measure anything
        if metrics is not None and not isinstance(metrics, VerifierMetrics):
            raise TypeError(f"metrics must be an aliak.VerifierMetrics, not {type(metrics)}")
        if request_log is True:
            request_log = LoggingRequestLog()
        elif request_log is False:
            request_log = None
        if request_log is not None and not isinstance(request_log, RequestLog):
            raise TypeError(f"request_log must be an aliak.RequestLog, not {type(request_log)}")
        self.metrics = metrics
        self.request_log = request_log
        # One check per request when neither is set: no clock read, no event built.
        self._observer = (
            None
            if metrics is None and request_log is None
            else _Observer(self._flow, metrics, request_log)
        )
        # Drop cached records when the store's invalidation channel says they changed.
        channel = store.invalidations
        self._unsubscribe: Callable[[], None] | None = None
        if channel is not None:
            self._unsubscribe = channel.subscribe(self.invalidate)
            self._flow.refresh = channel.refresh

    def __repr__(self) -> str:
        profile = self.settings.error_profile
        return f"{type(self).__name__}({self._store!r}, profile={profile!r})"

    def verify(
        self,
        request: Request,
        *,
        source_ip: str | None = None,
        vpc_id: str | None = None,
        request_id: str | None = None,
    ) -> R:
        """Run every check; ``source_ip`` is the client's address (after trusted proxies).

        Returns :class:`Verified` (awaited, for :class:`AsyncVerifier`) or raises the
        matching :class:`AliakError`; a request that is not an :class:`aliak.Request`
        raises ``TypeError`` at once. ``request_id`` is the id the server answers with,
        for the request log's event (a new one when ``None``)."""
        if not isinstance(request, Request):
            raise TypeError(f"verify() takes an aliak.Request, not {type(request).__name__}")
        if self._observer is None:
            return self._verify(request, source_ip, vpc_id)
        return self._drive_observed(self._observer, request, source_ip, vpc_id, request_id)

    def precheck(
        self,
        request: Request,
        *,
        source_ip: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Steps 1-3 alone -- ``Authorization``, the required and signed headers, the
        date window, the nonce's form -- with no store and no body: a server calls this
        before it reads a body, so a forged or stale request costs no upload. Raises
        what :meth:`verify` would; ``verify`` still runs every check. A ``verify`` of
        this very head with its body (:meth:`Request.with_body`) takes this reading,
        once, instead of making it again, and judges the date window again at its own
        time and the source it is given.

        A refusal here is reported to the metrics hook and the request log (as
        ``verify`` would report it: once); ``source_ip`` and ``request_id`` are for that
        event only -- no check reads them here."""
        if not isinstance(request, Request):
            raise TypeError(f"precheck() takes an aliak.Request, not {type(request).__name__}")
        flow = self._flow
        observer = self._observer
        if observer is None:
            try:
                pending = flow.warm_precheck(request) or flow.prepare(
                    request, flow.clock(), None, None, head_only=True
                )
            except Exception as error:
                flow.refuse(error)
                raise
            if pending is not None:
                flow.remember_prechecked(pending)
            return
        started = perf_counter()
        trace = _Trace()
        try:
            pending = flow.prepare(
                request, flow.clock(), None, None, head_only=True, into=trace.pending
            )
            if pending is not None:
                flow.remember_prechecked(pending)
        except Exception as error:
            self._report(
                observer,
                trace,
                error,
                request=request,
                source_ip=source_ip,
                request_id=request_id,
                started=started,
            )
            raise

    def report_refusal(
        self,
        error: AliakError,
        *,
        request: Request | None = None,
        source_ip: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Report a refusal the server made itself, before :meth:`verify` could run -- a
        body over the limit, a request it could not read, a transfer coding it cannot
        frame -- to the metrics hook and the request log, as ``verify`` reports its own
        (once; a failing hook or sink is logged, never raised). ``request`` is the head
        the server read (``None`` if it could not build one): what it presents -- key
        id, action -- goes in the event, though its checks were never the reason. The
        middlewares call this; with neither hook nor log installed it does nothing."""
        if not isinstance(error, AliakError):
            raise TypeError(f"report_refusal() takes an AliakError, not {type(error).__name__}")
        observer = self._observer
        if observer is None:
            return
        started = perf_counter()
        trace = _Trace()
        if request is not None:
            flow = self._flow
            with contextlib.suppress(Exception):  # only what the head presents
                flow.prepare(request, flow.clock(), None, None, head_only=True, into=trace.pending)
        if source_ip is not None:
            with contextlib.suppress(Exception):
                source_ip = self._flow._source(source_ip)[1]
        with contextlib.suppress(Exception):
            observer.refused(
                trace,
                error,
                request=request,
                source_ip=source_ip,
                request_id=request_id,
                started=started,
            )

    def _report(
        self,
        observer: _Observer,
        trace: _Trace,
        error: Exception,
        *,
        request: Request,
        source_ip: str | None,
        request_id: str | None,
        started: float,
    ) -> None:
        """Report ``error`` as the refusal the caller sees: the one ``refuse`` raises in
        its place (re-raised from here), else ``error`` itself (the caller re-raises)."""
        if source_ip is not None:
            with contextlib.suppress(Exception):  # only what the event says
                source_ip = self._flow._source(source_ip)[1]
        try:
            self._flow.refuse(error)
        except Exception as replaced:
            error = replaced
            observer.refused(
                trace,
                error,
                request=request,
                source_ip=source_ip,
                request_id=request_id,
                started=started,
            )
            raise
        observer.refused(
            trace,
            error,
            request=request,
            source_ip=source_ip,
            request_id=request_id,
            started=started,
        )

    def _verify(self, request: Request, source_ip: str | None, vpc_id: str | None) -> R:
        raise NotImplementedError

    def _drive(self, steps: Generator[_Step, Any, Verified]) -> R:
        raise NotImplementedError

    def _drive_observed(
        self,
        observer: _Observer,
        request: Request,
        source_ip: str | None,
        vpc_id: str | None,
        request_id: str | None,
    ) -> R:
        raise NotImplementedError

    def _flush_in_background(self, records: list[UsageRecord]) -> None:
        raise NotImplementedError

    def invalidate(self, access_key_id: str | None = None) -> None:
        """Forget a key's cached record and policies now (``None``: everything)."""
        if access_key_id is None:
            self._flow.keys.clear()
        else:
            self._flow.keys.discard(access_key_id)

    def _stop_following(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class Verifier(_Shell[Store, Verified]):
    """Verifies requests against a :class:`~aliak.storage.protocols.Store`.

    ``verify`` returns :class:`Verified` or raises the matching :class:`AliakError`.
    Last-use records are batched and written in the background every
    ``usage_flush_interval`` seconds, at :meth:`flush`, and at :meth:`close` (also on
    leaving a ``with`` block).
    """

    _writer: ThreadPoolExecutor | None = None
    _writes: tuple[Future[None], ...] = ()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _verify(self, request: Request, source_ip: str | None, vpc_id: str | None) -> Verified:
        """The warm path when the request takes it, else every step the general way."""
        flow = self._flow
        try:
            warm = flow.fast(request, source_ip, vpc_id)
            if warm is not None:
                pending, record, decision, now = warm
                if not self._store.claim_nonce(
                    pending.access_key_id,
                    pending.nonce,
                    now=now,
                    expires_at=pending.timestamp + flow._nonce_lifetime,
                ):
                    raise _nonce_used(pending)
                return flow.finish(pending, record, decision, now)
        except Exception as error:
            flow.refuse(error)
            raise
        return self._drive(flow.steps(request, source_ip, vpc_id))

    def _drive(self, steps: Generator[_Step, Any, Verified]) -> Verified:
        try:
            step = next(steps)
            while True:
                step = steps.send(step.perform(self))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except Exception as error:
            self._flow.refuse(error)
            raise

    def _drive_observed(
        self,
        observer: _Observer,
        request: Request,
        source_ip: str | None,
        vpc_id: str | None,
        request_id: str | None,
    ) -> Verified:
        """:meth:`_drive`, timed and traced, with the outcome reported to ``observer``."""
        started = perf_counter()
        trace = _Trace()
        steps = self._flow.steps(request, source_ip, vpc_id, trace)
        try:
            step = next(steps)
            while True:
                try:
                    answer = step.perform(self)
                except Exception:
                    trace.failed = step.operation
                    raise
                step = steps.send(answer)
        except StopIteration as done:
            verified: Verified = done.value
            observer.accepted(
                trace, verified, request=request, request_id=request_id, started=started
            )
            return verified
        except Exception as error:
            self._report(
                observer,
                trace,
                error,
                request=request,
                source_ip=source_ip,
                request_id=request_id,
                started=started,
            )
            raise

    def _flush_in_background(self, records: list[UsageRecord]) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aliak-usage")
        writes = tuple(write for write in self._writes if not write.done())
        self._writes = (*writes, self._writer.submit(self._write_quietly, records))

    def _write_quietly(self, records: list[UsageRecord]) -> None:
        try:
            self._store.record_usage(records)
        except Exception:  # a usage write must never fail a request
            if self._observer is not None:
                self._observer.store_error(FlushUsage.operation)

    def flush(self) -> None:
        """Write the batched last-use records now, after the background writes already
        under way. A failed background write was dropped; this write raises."""
        writes, self._writes = self._writes, ()
        for write in writes:
            write.result()
        records = self._flow.usage.drain()
        if records:
            self._store.record_usage(records)

    def close(self) -> None:
        """Flush and stop the background writer. The store stays open (it is yours)."""
        self._stop_following()
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None


class AsyncVerifier(_Shell[AsyncStore, Coroutine[Any, Any, Verified]]):
    """The same checks over an :class:`~aliak.storage.protocols.AsyncStore`.

    A body given as bytes is the norm here (the ASGI integration reads it); a sync file
    stream is read in place. Last-use batches are written by tasks on the running loop.
    """

    _flushes: frozenset[asyncio.Task[None]] = frozenset()

    async def __aenter__(self) -> AsyncVerifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _flush_in_background(self, records: list[UsageRecord]) -> None:
        task = asyncio.get_running_loop().create_task(self._write_quietly(records))
        self._flushes = self._flushes | {task}
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._flushes = self._flushes - {task}

    async def _write_quietly(self, records: list[UsageRecord]) -> None:
        try:
            await self._store.record_usage(records)
        except Exception:  # a failed usage write must not surface
            if self._observer is not None:
                self._observer.store_error(FlushUsage.operation)

    async def flush(self) -> None:
        """Write the batched last-use records now, after the background writes already
        under way. A failed background write was dropped; this write raises."""
        if self._flushes:
            await asyncio.gather(*self._flushes)
        records = self._flow.usage.drain()
        if records:
            await self._store.record_usage(records)

    async def aclose(self) -> None:
        """Wait for background writes, then flush what is left. The store stays open."""
        self._stop_following()
        await self.flush()

    async def _verify(
        self, request: Request, source_ip: str | None, vpc_id: str | None
    ) -> Verified:
        """The warm path when the request takes it, else every step the general way."""
        flow = self._flow
        try:
            warm = flow.fast(request, source_ip, vpc_id)
            if warm is not None:
                pending, record, decision, now = warm
                if not await self._store.claim_nonce(
                    pending.access_key_id,
                    pending.nonce,
                    now=now,
                    expires_at=pending.timestamp + flow._nonce_lifetime,
                ):
                    raise _nonce_used(pending)
                return flow.finish(pending, record, decision, now)
        except Exception as error:
            flow.refuse(error)
            raise
        return await self._drive(flow.steps(request, source_ip, vpc_id))

    async def _drive(self, steps: Generator[_Step, Any, Verified]) -> Verified:
        try:
            step = next(steps)
            while True:
                step = steps.send(await step.aperform(self))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except Exception as error:
            self._flow.refuse(error)
            raise

    async def _drive_observed(
        self,
        observer: _Observer,
        request: Request,
        source_ip: str | None,
        vpc_id: str | None,
        request_id: str | None,
    ) -> Verified:
        """:meth:`_drive`, timed and traced, with the outcome reported to ``observer``."""
        started = perf_counter()
        trace = _Trace()
        steps = self._flow.steps(request, source_ip, vpc_id, trace)
        try:
            step = next(steps)
            while True:
                try:
                    answer = await step.aperform(self)
                except Exception:
                    trace.failed = step.operation
                    raise
                step = steps.send(answer)
        except StopIteration as done:
            verified: Verified = done.value
            observer.accepted(
                trace, verified, request=request, request_id=request_id, started=started
            )
            return verified
        except Exception as error:
            self._report(
                observer,
                trace,
                error,
                request=request,
                source_ip=source_ip,
                request_id=request_id,
                started=started,
            )
            raise
