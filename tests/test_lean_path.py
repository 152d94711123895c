"""The verifier's per-layout memos cannot be poisoned and stay bounded.

Acs3Scheme remembers, per header layout, that the required/signed header checks passed,
and per Authorization head, its parsed fields; the flow remembers the service named by
each host. A request that merely resembles a remembered one must still be judged on
what it carries: a repeated header, a missing or unsigned one, a changed value. The
signer remembers the canonical method/URI/query lines per request; a request differing in
any of the three must sign as if nothing were remembered.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aliak import (
    AliakError,
    KeyManager,
    MemoryStore,
    RamUser,
    Request,
    Signer,
    Verifier,
)
from aliak.schemes import _MAX_LAYOUTS

NOW = 1_700_000_000


@pytest.fixture
def world() -> tuple[Signer, Verifier]:
    store = MemoryStore()
    key = (
        KeyManager(store, clock=lambda: NOW)
        .create_access_key(RamUser("1234567890123456", "lean"))
        .access_key
    )
    counter = itertools.count()
    signer = Signer(key, nonce_factory=lambda: f"nonce-{next(counter)}", clock=lambda: NOW)
    return signer, Verifier(store, clock=lambda: NOW, usage_flush_interval=1e9)


def _signed(signer: Signer, host: str = "ecs.aliyuncs.com", **extra: str) -> Request:
    request = Request(
        "POST",
        host=host,
        query={"RegionId": "cn-hangzhou"},
        headers={"content-type": "application/json", **extra},
        body=b'{"a":1}',
    )
    return signer.sign(request, action="DescribeRegions", version="2014-05-26")


def _with_headers(request: Request, items: list[tuple[str, str]]) -> Request:
    return attrs.evolve(request, headers=items)


def _refused(verifier: Verifier, request: Request) -> AliakError:
    with pytest.raises(AliakError) as caught:
        verifier.verify(request)
    return caught.value


def _acs3_scheme(verifier: Verifier) -> object:
    return verifier._flow._schemes["ACS3"]


def test_repeated_signed_header_is_refused_after_its_layout_was_remembered(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))  # remembers the layout
    request = _signed(signer)
    items = list(request.headers.items())
    date = next(value for name, value in items if name.lower() == "x-acs-date")
    error = _refused(verifier, _with_headers(request, [*items, ("x-acs-date", date)]))
    assert error.code == "IncompleteSignature"


def test_missing_signed_header_is_refused_after_its_layout_was_remembered(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))
    request = _signed(signer)
    items = [(n, v) for n, v in request.headers.items() if n.lower() != "content-type"]
    error = _refused(verifier, _with_headers(request, items))
    assert error.code == "IncompleteSignature"
    # A required one (x-acs-version, signed too) is named as missing.
    items = [(n, v) for n, v in request.headers.items() if n.lower() != "x-acs-version"]
    error = _refused(verifier, _with_headers(request, items))
    assert error.code == "MissingParameter"


def test_unsigned_acs_header_is_refused_after_a_similar_layout_was_remembered(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))
    request = _signed(signer)
    items = [*request.headers.items(), ("x-acs-extra", "unsigned")]
    error = _refused(verifier, _with_headers(request, items))
    assert error.code == "IncompleteSignature"


def test_changed_header_value_or_whitespace_is_refused_under_a_remembered_layout(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))
    request = _signed(signer)
    items = [
        (n, "text/plain" if n.lower() == "content-type" else v) for n, v in request.headers.items()
    ]
    assert _refused(verifier, _with_headers(request, items)).code == "SignatureDoesNotMatch"
    # Surrounding whitespace is trimmed by the canonical form (§5.4); inner whitespace
    # is part of the value.
    request = _signed(signer)
    items = [
        (n, "application/ json" if n.lower() == "content-type" else v)
        for n, v in request.headers.items()
    ]
    assert _refused(verifier, _with_headers(request, items)).code == "SignatureDoesNotMatch"


def test_header_name_case_does_not_change_the_outcome_under_a_remembered_layout(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))
    request = _signed(signer)
    upper = [(n.upper() if n != "Authorization" else n, v) for n, v in request.headers.items()]
    verifier.verify(_with_headers(request, upper))  # names are case-insensitive
    request = _signed(signer)
    items = [(n.upper(), v) for n, v in request.headers.items()]
    items.append(("X-ACS-DATE", {n.lower(): v for n, v in request.headers.items()}["x-acs-date"]))
    assert _refused(verifier, _with_headers(request, items)).code == "IncompleteSignature"


def test_tampered_signature_under_a_remembered_head_is_refused(
    world: tuple[Signer, Verifier],
) -> None:
    signer, verifier = world
    verifier.verify(_signed(signer))  # remembers the Authorization head
    request = _signed(signer)
    items = []
    for name, value in request.headers.items():
        sent = value
        if name.lower() == "authorization":
            head, _, signature = value.rpartition(",Signature=")
            flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
            sent = f"{head},Signature={flipped}"
        items.append((name, sent))
    assert _refused(verifier, _with_headers(request, items)).code == "SignatureDoesNotMatch"
    for bad in ("ZZ", "abc", ""):  # not lower hex of even length: parsed, and refused
        items = [
            (n, f"{v.rpartition(',Signature=')[0]},Signature={bad}")
            if n.lower() == "authorization"
            else (n, v)
            for n, v in request.headers.items()
        ]
        _refused(verifier, _with_headers(request, items))


def test_layout_and_head_memos_are_bounded(world: tuple[Signer, Verifier]) -> None:
    signer, verifier = world
    scheme = _acs3_scheme(verifier)
    for number in range(_MAX_LAYOUTS + 20):
        verifier.verify(_signed(signer, **{f"x-acs-extra-{number}": "1"}))
    assert len(scheme._layouts) <= _MAX_LAYOUTS  # type: ignore[attr-defined]
    assert len(scheme._heads) <= _MAX_LAYOUTS  # type: ignore[attr-defined]
    # Past the bound, new layouts are still checked in full.
    request = _signed(signer, **{"x-acs-extra-new": "1"})
    items = [(n, v) for n, v in request.headers.items() if n.lower() != "x-acs-extra-new"]
    assert _refused(verifier, _with_headers(request, items)).code == "IncompleteSignature"
    verifier.verify(_signed(signer, **{"x-acs-extra-newer": "1"}))


def test_host_service_memo_is_bounded(world: tuple[Signer, Verifier]) -> None:
    signer, verifier = world
    flow = verifier._flow
    for number in range(50):
        verifier.verify(_signed(signer, host=f"svc{number}.example.com"))
    assert flow._host_services["svc7.example.com"] == "svc7"
    flow._host_services.update({f"h{i}": "x" for i in range(4096 - len(flow._host_services))})
    verifier.verify(_signed(signer, host="fresh.example.com"))
    assert len(flow._host_services) <= 4096
    assert flow._host_services["fresh.example.com"] == "fresh"


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_NOISE = _ID_ALPHABET + ",;= :/%\x00é"


@settings(max_examples=300, deadline=None)
@given(
    key_id=st.text(_NOISE, min_size=0, max_size=140),
    signature=st.text("0123456789abcdefABCDEF,=", min_size=0, max_size=80),
    padding=st.integers(min_value=0, max_value=9000),
    lenient=st.booleans(),
)
@example(key_id="0 ", signature="0000", padding=0, lenient=True)  # read leniently as "0"
@example(key_id="0 ", signature="0000", padding=0, lenient=False)
def test_a_remembered_layout_parses_any_id_and_signature_as_the_parser_does(
    key_id: str, signature: str, padding: int, lenient: bool
) -> None:
    # The head memo is keyed by layout (algorithm, SignedHeaders), not by id: under a
    # remembered layout, whatever id and signature a caller sends must come out exactly as
    # parse_authorization reads them, or be refused with the same code.
    from aliak.authorization import parse_authorization

    verifier = Verifier(MemoryStore(), clock=lambda: NOW, lenient_authorization=lenient)
    scheme: Any = _acs3_scheme(verifier)
    head = "ACS3-HMAC-SHA256 Credential={},SignedHeaders=host;x-acs-date,Signature={}"
    scheme._authorization(head.format("LTAI" + "5" * 20, "ab" * 32))  # remembers the layout
    if padding > 8192 - 100:
        signature = "ab" * (padding // 2)  # around and past the length limit
    value = head.format(key_id, signature)
    configured = verifier._flow.settings  # the parser as this verifier runs it
    try:
        expected: object = parse_authorization(
            value,
            allowed_algorithms=configured.allowed_algorithms,
            lenient=configured.lenient_authorization,
        )
    except AliakError as error:
        expected = error.code
    try:
        got: object = scheme._authorization(value)
    except AliakError as error:
        got = error.code
    assert got == expected


# -- the signer's memo of canonical method/URI/query lines ---------------------------

_SIGNER_PARTS = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.sampled_from(["/", "/a", "/a/", "/%2F"]),
    st.lists(
        st.tuples(st.sampled_from(["A", "a", "B", "A "]), st.sampled_from(["", "1", "x y", "é"])),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ),
)
_SHARED_SIGNER = Signer(
    KeyManager(MemoryStore(), clock=lambda: NOW)
    .create_access_key(RamUser("1234567890123456", "memo"))
    .access_key,
    nonce_factory=lambda: "n" * 32,
    clock=lambda: NOW,
)


@settings(max_examples=300, deadline=None)
@given(parts=_SIGNER_PARTS)
def test_a_signer_that_remembers_request_lines_signs_as_a_fresh_one(
    parts: tuple[str, str, list[tuple[str, str]]],
) -> None:
    # One signer across all examples remembers (method, path, query) triples that differ
    # in one place only; each must still sign exactly as a signer that has seen nothing.
    method, path, query = parts
    request = Request(method, host="ecs.aliyuncs.com", path=path, query=query, body=b"{}")
    fresh = Signer(
        _SHARED_SIGNER._prepared.credential,
        nonce_factory=lambda: "n" * 32,
        clock=lambda: NOW,
    )
    expected = fresh.sign_detailed(request)
    for _ in range(2):  # the first fills the memo, the second reads it
        assert _SHARED_SIGNER.sign_detailed(request) == expected


def test_the_signer_refuses_a_repeated_query_name_every_time_and_its_memo_is_bounded() -> None:
    from aliak.signer import _MAX_HEADS

    signer = Signer(
        _SHARED_SIGNER._prepared.credential, nonce_factory=lambda: "n" * 32, clock=lambda: NOW
    )
    repeated = Request("GET", host="h.example.com", query=[("A", "1"), ("A", "2")])
    for _ in range(3):
        with pytest.raises(AliakError) as refused:
            signer.sign(repeated)
        assert refused.value.code == "InvalidParameter"
    for number in range(_MAX_HEADS + 20):
        signer.sign(Request("GET", host="h.example.com", query={"Id": str(number)}))
    assert len(signer._heads) <= _MAX_HEADS
    late = Request("GET", host="h.example.com", query={"Id": "late"})
    assert "Id=late" in signer.sign_detailed(late).canonical_request
