"""The warm path judges every request exactly as the general steps do.

A warm ACS3 request -- a header layout read before, its key and policies cached -- is
verified in one pass (``_Flow.fast``) instead of the generator of steps. These tests
pit a verifier with the warm path against a twin whose warm path is switched off, on
one store (each twin claims nonces in its own): an attacker's variations of a signed
request -- every field the caller controls, the clock at the window's edges, the
source, the key's state, a replay -- must end the same way in both, accepted with
equal results or refused with the same code, message, detail and status.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import itertools
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliak import (
    AliakError,
    KeyManager,
    MemoryStore,
    NetworkPolicy,
    RamUser,
    Request,
    Signer,
    Verifier,
    VerifierSettings,
)
from aliak.canonical import canonical_headers, canonical_query_string
from aliak.request import Headers
from conftest import MakeVerifier

NOW = 1_700_000_000
SKEW = 900
OWNER = RamUser("1234567890123456", "warm")
BODY = b'{"Name":"warm"}'
_nonces = itertools.count()


class SeparateNonces:
    """The store, but with claims of its own: two verifiers may each accept a request."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._claims = MemoryStore()

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        return self._claims.claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Twins:
    def __init__(self, **options: Any) -> None:
        self.now = float(NOW)
        self.store = MemoryStore()
        self.keys = KeyManager(self.store, clock=lambda: NOW)
        self.new = self.keys.create_access_key(OWNER)
        self.signer = Signer(self.new.access_key, clock=lambda: NOW, nonce_factory=self.nonce)
        self.warm = Verifier(self.store, clock=lambda: self.now, **options)
        self.general = Verifier(SeparateNonces(self.store), clock=lambda: self.now, **options)  # type: ignore[arg-type]
        self.general._flow._acs3 = None  # the general steps only
        self.taken = 0
        fast = self.warm._flow.fast

        def counting_fast(*args: Any) -> Any:
            result = fast(*args)
            self.taken += result is not None
            return result

        self.warm._flow.fast = counting_fast  # type: ignore[method-assign]
        for _ in range(2):  # the layout read once, the key and its policies cached
            for verifier in (self.warm, self.general):
                verifier.verify(self.signed(), source_ip="203.0.113.7")
        self.taken = 0

    def nonce(self) -> str:
        return f"warm-{next(_nonces)}"

    def signed(
        self,
        *,
        headers: dict[str, str] | None = None,
        action: str = "RunInstances",
        signer: Signer | None = None,
    ) -> Request:
        """A POST of BODY signed by ``signer`` (the key's own by default)."""
        return (signer or self.signer).sign(
            Request("POST", host="ecs.aliyuncs.com", path="/", headers=headers, body=BODY),
            action=action,
            version="2014-05-26",
        )

    def outcomes(self, request: Request, source_ip: str | None) -> list[tuple[Any, ...]]:
        found = []
        for verifier in (self.warm, self.general):
            try:
                verified = verifier.verify(request, source_ip=source_ip)
            except AliakError as error:
                found.append((error.code, error.message, error.detail, error.http_status))
            else:
                found.append(("accepted", verified))
        return found


def _replace(request: Request, name: str, value: str | None) -> Request:
    """``name`` (any case) set to ``value`` in place, or dropped for ``None``."""
    pairs = [
        (key, value if key.lower() == name else old)
        for key, old in request.headers.items()
        if not (key.lower() == name and value is None)
    ]
    return attrs.evolve(request, headers=Headers(pairs))


def resign(request: Request, secret: str, names: str) -> Request:
    """``request`` signed again over what it now holds, as a key holder may sign
    anything: its Authorization's algorithm and id, the header names it signed
    (``"same"``) or every header it has (``"all"``), the body's real hash."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return request
    algorithm, _, rest = authorization.partition(" Credential=")
    access_key_id, _, rest = rest.partition(",SignedHeaders=")
    signed = rest.partition(",Signature=")[0].split(";")
    index = request.headers._index
    if names == "all":
        signed = sorted(name for name in index if name != "authorization")
    if not all(name in index for name in signed):
        return request
    assert isinstance(request.body, bytes)
    canonical = (
        f"{request.method}\n{request.path or '/'}\n{canonical_query_string(request.query)}\n"
        f"{canonical_headers(index, signed)}\n{';'.join(signed)}\n"
        f"{hashlib.sha256(request.body).hexdigest()}"
    )
    to_sign = f"{algorithm}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    value = f"{algorithm} Credential={access_key_id},SignedHeaders={';'.join(signed)},Signature={signature}"
    return _replace(request, "authorization", value)


# Each is (what it does, request -> request): what a client or an attacker can send.
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_HEADER = st.sampled_from(
    [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
        "content-type",
        "authorization",
    ]
)


@st.composite
def _variation(draw: st.DrawFn) -> Any:
    kind = draw(
        st.sampled_from(
            [
                "none",
                "value",
                "pad",
                "drop",
                "repeat",
                "case",
                "extra",
                "body",
                "query",
                "host",
                "path",
                "method",
                "signature",
                "key id",
                "accesskey header",
                "token",
                "authorization space",
                "content hash",
            ]
        )
    )
    name = draw(_HEADER)
    text = draw(_TEXT)

    def apply(request: Request) -> Request:  # noqa: PLR0911, PLR0912 - one branch per kind
        headers = list(request.headers.items())
        if kind == "value":
            return _replace(request, name, text)
        if kind == "pad":
            value = request.headers.get(name) or ""
            return _replace(request, name, f" \t{value} ")
        if kind == "drop":
            return _replace(request, name, None)
        if kind == "repeat":
            value = request.headers.get(name) or ""
            return attrs.evolve(request, headers=Headers([*headers, (name, value)]))
        if kind == "case":
            pairs = [(key.upper() if key.lower() == name else key, v) for key, v in headers]
            return attrs.evolve(request, headers=Headers(pairs))
        if kind == "extra":  # unsigned: allowed unless it is an x-acs-* header
            extra = "user-agent" if text[:1] == "a" else "x-acs-extra"
            return attrs.evolve(request, headers=Headers([*headers, (extra, text)]))
        if kind == "body":
            return attrs.evolve(request, body=text.encode())
        if kind == "query":
            return attrs.evolve(request, query=(*request.query, ("Id", text), ("Id", "2")))
        if kind == "host":
            return attrs.evolve(request, host="ECS.aliyuncs.com" if not text else "other.example")
        if kind == "path":
            return attrs.evolve(request, path="/x")
        if kind == "method":
            return attrs.evolve(request, method="PUT")
        authorization = request.headers.get("authorization")
        if authorization is None:
            return request  # dropped by an earlier variation
        head, _, signature = authorization.rpartition(",Signature=")
        if kind == "signature":
            forged = {
                "": signature.upper(),
                "a": signature[:-1],
                "b": signature[:-2] + ("00" if signature[-2:] != "00" else "11"),
            }.get(text[:1], signature[::-1])
            return _replace(request, "authorization", f"{head},Signature={forged}")
        if kind == "key id":
            other = {"": "STS.warm", "a": "LTAIunknown0000000000", "b": "bad id"}.get(
                text[:1], "LTAI" + "x" * 20
            )
            algorithm, _, rest = head.partition(" Credential=")
            _, _, names = rest.partition(",SignedHeaders=")
            return _replace(
                request,
                "authorization",
                f"{algorithm} Credential={other},SignedHeaders={names},Signature={signature}",
            )
        if kind == "accesskey header":
            return attrs.evolve(request, headers=Headers([*headers, ("x-acs-accesskey-id", text)]))
        if kind == "token":
            return attrs.evolve(
                request, headers=Headers([*headers, ("x-acs-security-token", text or "t")])
            )
        if kind == "authorization space":
            return _replace(request, "authorization", " " + authorization.replace(",", ", ", 1))
        if kind == "content hash":
            value = {"": "UNSIGNED-PAYLOAD", "a": "0" * 64}.get(
                text[:1], (request.headers.get("x-acs-content-sha256") or "").upper()
            )
            return _replace(request, "x-acs-content-sha256", value)
        return request

    return kind, apply


_SOURCES = st.sampled_from(
    [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "198.51.100.1",
        "2001:db8::1",
        None,
        "not an address",
    ]
)
_CLOCK = st.sampled_from([0, 1, -1, SKEW, -SKEW, SKEW + 1, -SKEW - 1, 10_000])


@pytest.fixture(scope="module")
def twins() -> Twins:
    return Twins()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    variations=st.lists(_variation(), max_size=2),
    source_ip=_SOURCES,
    offset=_CLOCK,
    replay=st.booleans(),
    signed=st.sampled_from(["no", "same", "all"]),
)
def test_the_warm_path_ends_every_variation_as_the_general_steps_do(  # noqa: PLR0917 - given
    twins: Twins,
    variations: list[Any],
    source_ip: str | None,
    offset: int,
    replay: bool,
    signed: str,
) -> None:
    request = twins.signed()
    for _, apply in variations:
        try:
            request = apply(request)
        except (TypeError, ValueError, AliakError):
            return  # not a request a server could build: nothing to verify
    if signed != "no":  # what the key holder signed, not what someone changed after
        request = resign(request, twins.new.access_key.secret.reveal(), signed)
    twins.now = NOW + offset
    try:
        outcomes = twins.outcomes(request, source_ip)
        assert outcomes[0] == outcomes[1], [kind for kind, _ in variations]
        if replay:
            again = twins.outcomes(request, source_ip)
            assert again[0] == again[1]
    finally:
        twins.now = NOW


@pytest.mark.parametrize("state", ["active", "inactive", "recycled", "leak", "acl", "acl-pass"])
@pytest.mark.parametrize("action", ["RunInstances", "CreateAccessKey"])
def test_the_warm_path_judges_the_keys_state_and_acl_as_the_general_steps_do(
    state: str, action: str
) -> None:
    twins = Twins(service_name="ecs")  # so a leak-restricted key may call a harmless API
    key_id = twins.new.access_key_id
    if state == "inactive":
        twins.keys.disable_access_key(key_id)
    elif state == "recycled":
        twins.keys.disable_access_key(key_id)
        twins.keys.delete_access_key(key_id)
    elif state == "leak":
        twins.keys.mark_leaked(key_id)
    elif state.startswith("acl"):
        allowed = "203.0.113.0/24" if state == "acl-pass" else "198.51.100.0/24"
        twins.keys.set_network_policy(NetworkPolicy(public=(allowed,)), access_key_id=key_id)
    # Not high-risk: a leak-restricted key may call it.
    reload = twins.signed(action="DescribeInstances")
    for verifier in (twins.warm, twins.general):
        verifier.invalidate(key_id)
        with contextlib.suppress(AliakError):  # state and policies read again, once
            verifier.verify(reload, source_ip="203.0.113.7")
    outcomes = twins.outcomes(twins.signed(action=action), "203.0.113.7")
    assert outcomes[0] == outcomes[1]


_BAD_ID = "a" * 129
# What a key holder may sign (the signature is valid) that a check must still refuse.
_SIGNED_ODDITIES: list[tuple[str, dict[str, str | None], tuple[tuple[str, str], ...]]] = [
    ("action with a space", {"x-acs-action": "Run Instances"}, ()),
    ("empty action", {"x-acs-action": ""}, ()),
    ("version with a tab", {"x-acs-version": "2014-05-26\t1"}, ()),
    ("empty nonce", {"x-acs-signature-nonce": ""}, ()),
    ("long nonce", {"x-acs-signature-nonce": _BAD_ID}, ()),
    ("nonce with a space", {"x-acs-signature-nonce": "a b"}, ()),
    ("zero content hash", {"x-acs-content-sha256": "0" * 64}, ()),
    ("unsigned payload", {"x-acs-content-sha256": "UNSIGNED-PAYLOAD"}, ()),
    ("upper-case content hash", {"x-acs-content-sha256": "upper"}, ()),
    ("bad date", {"x-acs-date": "2023-11-14 22:13:20"}, ()),
    ("repeated query name", {}, (("Id", "1"), ("Id", "2"))),
    ("padded values", {"host": " ecs.aliyuncs.com\t", "content-type": " text/plain "}, ()),
    ("padded action", {"x-acs-action": " RunInstances "}, ()),
]


@pytest.mark.parametrize(
    ("what", "changes", "query"), _SIGNED_ODDITIES, ids=[case[0] for case in _SIGNED_ODDITIES]
)
@pytest.mark.parametrize("offset", [0, SKEW, -SKEW, SKEW + 1])
def test_what_a_key_holder_signs_is_judged_on_the_warm_path_as_on_the_general_one(
    what: str, changes: dict[str, str | None], query: tuple[tuple[str, str], ...], offset: int
) -> None:
    twins = Twins()
    request = attrs.evolve(twins.signed(), query=query)
    for name, value in changes.items():
        upper = (request.headers.get(name) or "").upper()
        request = _replace(request, name, upper if value == "upper" else value)
    request = resign(request, twins.new.access_key.secret.reveal(), "same")
    twins.now = NOW + offset
    outcomes = twins.outcomes(request, "203.0.113.7")
    assert outcomes[0] == outcomes[1]
    # Trimmed values and a hash in capitals say what the signature says: accepted.
    harmless = what in ("padded values", "upper-case content hash")
    assert (outcomes[0][0] == "accepted") == (harmless and abs(offset) <= SKEW)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-acs-accesskey-id", "LTAIsomeoneElse0000000"),
        ("x-acs-security-token", "token"),
        ("x-acs-action", "DeleteInstances"),  # sent twice, both signed
    ],
)
def test_an_added_signed_header_is_judged_on_the_warm_path_as_on_the_general_one(
    header: str, value: str
) -> None:
    twins = Twins()
    request = twins.signed()
    extended = attrs.evolve(request, headers=Headers([*request.headers.items(), (header, value)]))
    for _ in range(2):  # the second time, the layout has been read once
        signed = resign(extended, twins.new.access_key.secret.reveal(), "all")
        outcomes = twins.outcomes(signed, "203.0.113.7")
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0] != "accepted"
        extended = _replace(extended, "x-acs-signature-nonce", twins.nonce())


@pytest.mark.parametrize("kind", ["sts", "unknown"])
def test_a_credential_the_store_does_not_hold_is_judged_as_on_the_general_path(kind: str) -> None:
    twins = Twins()
    request = twins.signed()
    authorization = request.headers["authorization"]
    other = "STS.warmNoToken" if kind == "sts" else "LTAIunknown0000000000"
    forged = _replace(
        request, "authorization", authorization.replace(twins.new.access_key_id, other)
    )
    for _ in range(2):
        signed = resign(forged, twins.new.access_key.secret.reveal(), "same")
        outcomes = twins.outcomes(signed, "203.0.113.7")
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0] != "accepted"
        forged = _replace(forged, "x-acs-signature-nonce", twins.nonce())


@pytest.mark.parametrize(
    "change",
    ["upper", "odd", "not hex", "empty", "short", "long"],
)
def test_a_changed_signature_is_judged_on_the_warm_path_as_on_the_general_one(
    change: str,
) -> None:
    twins = Twins()
    request = twins.signed()
    head, _, signature = request.headers["authorization"].rpartition(",Signature=")
    forged = {
        "upper": signature.upper(),
        "odd": signature[:-1],
        "not hex": signature[:-1] + "g",
        "empty": "",
        "short": signature[:32],
        "long": signature + "00",
    }[change]
    outcomes = twins.outcomes(
        _replace(request, "authorization", f"{head},Signature={forged}"), "203.0.113.7"
    )
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == "accepted") == (change == "upper")


def test_an_oversized_body_is_judged_on_the_warm_path_as_on_the_general_one() -> None:
    twins = Twins(max_body_size=len(BODY))
    request = resign(
        attrs.evolve(twins.signed(), body=BODY + b" "), twins.new.access_key.secret.reveal(), "same"
    )
    outcomes = twins.outcomes(request, "203.0.113.7")
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "PayloadTooLarge"


def test_a_warm_request_takes_the_warm_path_and_a_new_layout_does_not() -> None:
    twins = Twins()
    assert twins.outcomes(twins.signed(), "203.0.113.7")[0][0] == "accepted"
    assert twins.taken == 1
    # A layout not read before (a query changes nothing, a new header does): general.
    request = twins.signed(headers={"x-acs-new": "1"})
    assert twins.outcomes(request, "203.0.113.7")[0][0] == "accepted"
    assert twins.taken == 1
    # Read once the general way, the layout is warm from then on.
    again = twins.signed(headers={"x-acs-new": "2"})
    assert twins.outcomes(again, "203.0.113.7")[0][0] == "accepted"
    assert twins.taken == 2


def test_a_warm_unknown_id_costs_the_same_steps_as_a_wrong_signature() -> None:
    # Both take the warm path to its signature check and are refused there: an unknown
    # id is not sent down the longer general path (which a clock could tell apart).
    twins = Twins()
    forged = Signer(
        attrs.evolve(twins.new.access_key, secret="wrong"),  # type: ignore[arg-type]
        clock=lambda: NOW,
        nonce_factory=twins.nonce,
    )
    stranger = Signer(
        attrs.evolve(twins.new.access_key, access_key_id="LTAIunknown0000000000"),
        clock=lambda: NOW,
        nonce_factory=twins.nonce,
    )
    for signer in (stranger, forged, stranger):
        with pytest.raises(AliakError):
            twins.warm.verify(twins.signed(signer=signer), source_ip="203.0.113.7")
    steps = twins.warm._flow.steps
    general: list[object] = []

    def counting_steps(*args: Any) -> Any:
        general.append(args)
        return steps(*args)

    twins.warm._flow.steps = counting_steps  # type: ignore[method-assign]
    codes = []
    for signer in (stranger, forged):
        with pytest.raises(AliakError) as caught:
            twins.warm.verify(twins.signed(signer=signer), source_ip="203.0.113.7")
        codes.append(caught.value.code)
    assert codes == ["InvalidAccessKeyId.NotFound", "SignatureDoesNotMatch"]
    assert general == []  # neither left the warm path


def test_the_async_shell_takes_the_warm_path(make_verifier: MakeVerifier) -> None:
    store = MemoryStore()
    new = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    signer = Signer(new.access_key, clock=lambda: NOW)
    verifier = make_verifier(store, clock=lambda: float(NOW))
    shell = getattr(verifier, "shell", verifier)
    fast = shell._flow.fast
    taken: list[bool] = []

    def counting_fast(*args: Any) -> Any:
        result = fast(*args)
        taken.append(result is not None)
        return result

    shell._flow.fast = counting_fast
    request = Request("POST", host="ecs.aliyuncs.com", path="/", body=BODY)

    def sign() -> Request:
        return signer.sign(request, action="RunInstances", version="2014-05-26")

    results = [verifier.verify(sign()) for _ in range(3)]
    assert taken == [False, True, True]
    assert {result.access_key_id for result in results} == {new.access_key_id}
    replayed = sign()
    verifier.verify(replayed)
    with pytest.raises(AliakError) as caught:
        verifier.verify(replayed)
    assert caught.value.code == "SignatureNonceUsed"
    assert taken[-1] is True  # refused as used on the warm path, after its claim


def test_settings_that_change_the_order_keep_the_general_steps() -> None:
    early = Twins(settings=VerifierSettings(claim_nonce_before_state_checks=True))
    assert early.warm._flow._acs3 is None
    assert early.outcomes(early.signed(), "203.0.113.7")[0][0] == "accepted"


@pytest.mark.parametrize(
    "case", ["same", "other body", "stream", "oversized", "late", "other query", "twice"]
)
def test_precheck_then_verify_on_the_warm_path_ends_as_on_the_general_one(case: str) -> None:
    # The middlewares' order: the head prechecked (read warm), then verified with its
    # body; each twin prechecks its own copy, so both take their own reading.
    twins = Twins(max_body_size=len(BODY) if case == "oversized" else None)
    signed = twins.signed()
    head = signed.with_body(b"")
    outcomes = []
    for verifier in (twins.warm, twins.general):
        twins.now = float(NOW)
        verifier.precheck(head)
        flow = verifier._flow
        prechecked = next(iter(flow._prechecked.values()))
        # The warm twin read the head in one pass; the general one prepared it.
        assert (getattr(prechecked, "plan", None) is not None) == (verifier is twins.warm)
        full: Request = head.with_body(BODY)
        if case == "other body":
            full = head.with_body(BODY + b" ")
        elif case == "stream":
            full = attrs.evolve(head, body=io.BytesIO(BODY))
            full = Request._with_headers(full, head.headers, full.body)
        elif case == "oversized":
            full = head.with_body(BODY + b" ")
        elif case == "late":
            twins.now = NOW + SKEW + 1
        elif case == "other query":
            full = Request._with_headers(attrs.evolve(head, query={"Id": "1"}), head.headers, BODY)
        for _ in range(2 if case == "twice" else 1):
            try:
                verified = verifier.verify(full, source_ip="203.0.113.7")
            except AliakError as error:
                outcomes.append((error.code, error.message, error.detail, error.http_status))
            else:
                outcomes.append(("accepted", verified))
        assert flow._prechecked == {}
    twins.now = float(NOW)
    half = len(outcomes) // 2
    assert outcomes[:half] == outcomes[half:]
    accepted = case in ("same", "stream", "twice")
    assert (outcomes[0][0] == "accepted") == accepted
    if case == "twice":
        assert outcomes[1][0] == "SignatureNonceUsed"


@pytest.mark.parametrize(
    ("what", "changes", "offset"),
    [
        ("stale", {}, SKEW + 1),
        ("early", {}, -SKEW - 1),
        ("empty nonce", {"x-acs-signature-nonce": ""}, 0),
        ("action with a space", {"x-acs-action": "Run Instances"}, 0),
        ("bad date", {"x-acs-date": "yesterday"}, 0),
        ("fine", {}, SKEW),
    ],
)
def test_precheck_of_a_warm_head_refuses_what_the_general_precheck_refuses(
    what: str, changes: dict[str, str], offset: int
) -> None:
    twins = Twins()
    request = twins.signed()
    for name, value in changes.items():
        request = _replace(request, name, value)
    head = resign(request, twins.new.access_key.secret.reveal(), "same").with_body(b"")
    twins.now = NOW + offset
    outcomes = []
    for verifier in (twins.warm, twins.general):
        try:
            verifier.precheck(head)
        except AliakError as error:
            outcomes.append((error.code, error.message, error.detail, error.http_status))
        else:
            outcomes.append(("passed",))
    twins.now = float(NOW)
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == "passed") == (what == "fine")
