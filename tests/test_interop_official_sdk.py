"""Differential tests: aliak's signer against the official Python SDK (tea-openapi 0.4.6).

The SDK's ``Utils.get_authorization`` is given the request aliak signed -- the same method,
path, flattened query, headers (all but ``Authorization``) and payload hash -- and the two
``Authorization`` values must be byte-identical (spec ``acs3-signature.md`` §4, §5, §10).

Where the two are known to differ by design, the inputs stay inside the common ground:
query names use only unreserved characters (§10.2), booleans are given to the SDK as
``true``/``false`` (§10.3), and header values end in SP/HTAB only (§5.4 "Trim set"). A
separate test pins down that the trim sets are the *only* source of difference in values.

The SDK is not handed aliak's output but the request as the test models it: the headers
given, plus exactly what ``sign()`` documents it fills (host, ``x-acs-action`` /
``x-acs-version`` when given to ``sign()``, ``x-acs-date``, the nonce,
``x-acs-content-sha256`` and the STS headers). A header aliak invented on top of those
(such as a ``content-type`` for a body that has none) makes both comparisons fail.
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from alibabacloud_tea_openapi.utils import Utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliak import AccessKey, AliakError, Request, Signer, StsCredential, path_from_segments

HMAC_ALGORITHMS = ("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3")
RSA_ALGORITHM = "ACS3-RSA-SHA256"

_VECTORS = json.loads((Path(__file__).parent / "vectors_acs3.json").read_text(encoding="utf-8"))
RSA_PRIVATE_KEY_PEM: str = next(
    vector["private_key_pem"]
    for vector in _VECTORS["vectors"]
    if vector["name"] == "doc-example-rsa-sha256"
)

COMMON_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
RSA_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

UNRESERVED = string.ascii_letters + string.digits + "-_.~"
RESERVED_CHARS = " !*'()+/=&?#%~"
# RFC 9110 token characters, lower case (case variants are drawn separately).
TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_lowercase
LOWER_ALNUM_DASH = string.ascii_lowercase + string.digits + "-"

# Text with no lone surrogates, and with the reserved characters drawn often.
unicode_text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(RESERVED_CHARS)),
    max_size=30,
)

query_names = st.text(alphabet=UNRESERVED, min_size=1, max_size=20)
nested_keys = st.text(alphabet=UNRESERVED, min_size=1, max_size=8)
query_leaves = st.one_of(
    unicode_text, st.none(), st.booleans(), st.integers(min_value=-(10**12), max_value=10**12)
)
nested_values = st.recursive(
    query_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(nested_keys, children, max_size=3)
    ),
    max_leaves=8,
)
# Mostly plain strings (the common case), sometimes nested lists/dicts to flatten.
query_values = st.one_of(unicode_text, unicode_text, nested_values)
queries = st.dictionaries(query_names, query_values, max_size=8)

path_segments = st.lists(unicode_text, max_size=5)
paths = st.one_of(st.just("/"), st.just(""), path_segments.map(path_from_segments))

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        unicode_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(unicode_text, children, max_size=4)
    ),
    max_leaves=10,
)
json_bodies = json_values.map(
    lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
)
# (body, content-type to send or None). A body without a content-type is drawn often: the
# signer must not add one (the official SDK's signing does not).
bodies = st.one_of(
    st.just((b"", None)),
    st.tuples(st.binary(min_size=1, max_size=512), st.none()),
    st.tuples(st.binary(min_size=1, max_size=64), st.just("application/octet-stream")),
    st.tuples(json_bodies, st.sampled_from([None, "application/json; charset=utf-8"])),
    st.tuples(json_bodies.filter(bool), st.none()),
)

hosts = st.one_of(
    st.sampled_from(["ecs.cn-shanghai.aliyuncs.com", "cs.aliyuncs.com", "127.0.0.1:8080"]),
    st.builds(
        lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
        st.lists(
            st.text(alphabet=LOWER_ALNUM_DASH, min_size=1, max_size=10), min_size=1, max_size=4
        ),
        st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    ),
)

# Header names aliak refuses to be handed (already signed) or checks against its own
# value (hash, STS headers): never generated as extras.
SIGNER_OWNED = frozenset(
    {"authorization", "x-acs-content-sha256", "x-acs-security-token", "x-acs-accesskey-id"}
)
WELL_KNOWN_HEADERS = (
    "user-agent",
    "accept",
    "accept-encoding",
    "cache-control",
    "content-type",
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-credentials-provider",
    "x-acs-retry-attempts",
)
suffixes = st.text(alphabet=LOWER_ALNUM_DASH, min_size=1, max_size=15)
any_header_names = st.one_of(
    st.sampled_from(WELL_KNOWN_HEADERS),
    suffixes.map(lambda suffix: "x-acs-" + suffix),
    suffixes.map(lambda suffix: "x-custom-" + suffix),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20),
).filter(lambda name: name not in SIGNER_OWNED)
documented_header_names = st.one_of(
    st.just("content-type"),
    st.sampled_from([n for n in WELL_KNOWN_HEADERS if n.startswith("x-acs-")]),
    suffixes.map(lambda suffix: "x-acs-" + suffix),
).filter(lambda name: name not in SIGNER_OWNED)

# Printable ASCII (HTAB too) inside; only SP/HTAB at the ends, where both trim sets agree.
http_whitespace = st.text(alphabet=" \t", max_size=3)
printable_core = st.text(alphabet=[chr(c) for c in range(0x20, 0x7F)] + ["\t"], max_size=40)
header_values = st.builds(
    lambda a, b, c: a + b + c, http_whitespace, printable_core, http_whitespace
)


def case_variants(name: str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.sampled_from(sorted({c, c.upper()})) for c in name)).map("".join)


@st.composite
def header_lists(
    draw: st.DrawFn,
    names: st.SearchStrategy[str] = any_header_names,
    values: st.SearchStrategy[str] = header_values,
    max_names: int = 12,
) -> list[tuple[str, str]]:
    """0-12 distinct names; some repeated in another case (``x-acs-test`` / ``X-ACS-TEST``)."""
    bases = draw(st.lists(names, unique=True, max_size=max_names))
    items = []
    for base in bases:
        spellings = draw(st.lists(case_variants(base), min_size=1, max_size=3, unique=True))
        items.extend((spelling, draw(values)) for spelling in spellings)
    return list(draw(st.permutations(items)))


access_key_ids = st.text(
    alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=40
)
hmac_secrets = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80)
security_tokens = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=200)
nonces = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.uuids().map(str),
)
actions = st.one_of(st.none(), st.sampled_from(["RunInstances", "DescribeRegions", "AssumeRole"]))
versions = st.one_of(st.none(), st.sampled_from(["2014-05-26", "2015-04-01"]))
# Whole seconds from 1970 to 9999, plus a fraction the signer must truncate.
clock_values = st.builds(
    lambda whole, fraction: whole + fraction,
    st.integers(min_value=0, max_value=253402300799),
    st.sampled_from([0.0, 0.25, 0.5, 0.999]),
)

# ---------------------------------------------------------------------------------------
# The test's own model of the inputs (written from the spec, not from aliak)
# ---------------------------------------------------------------------------------------


def flatten_query_for_sdk(query: dict[str, Any]) -> list[tuple[str, str]]:
    """§5.3 "Flattening": lists 1-based (``Name.1``), dicts ``Prefix.Key``, None dropped.

    Booleans become ``true``/``false`` (aliak's choice, §10.3), integers ``str()``.
    """
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for key, member in value.items():
                walk(f"{prefix}.{key}", member)
        elif isinstance(value, list):
            for position, member in enumerate(value, start=1):
                walk(f"{prefix}.{position}", member)
        elif isinstance(value, bool):
            out.append((prefix, "true" if value else "false"))
        else:
            out.append((prefix, str(value)))

    for name, value in query.items():
        walk(name, value)
    return out


def contains_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(contains_bool(member) for member in value.values())
    if isinstance(value, list):
        return any(contains_bool(member) for member in value)
    return False


def spec_path(segments: list[str]) -> str:
    return "/" + "/".join(quote(segment, safe="~") for segment in segments)


def signed_header_names(authorization: str) -> list[str]:
    fields = dict(part.split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
    return fields["SignedHeaders"].split(";")


def sdk_authorization(
    *,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
    algorithm: str,
    access_key_id: str,
    secret: str,
) -> str:
    request = SimpleNamespace(pathname=path, method=method, query=query, headers=headers)
    payload = Utils.hex_encode(Utils.hash(body, algorithm))
    return Utils.get_authorization(request, algorithm, payload, access_key_id, secret)


def headers_sign_fills(case: dict[str, Any]) -> list[tuple[str, str]]:
    """What ``sign()`` adds to the case's headers, from the test's own model (spec §3, §11).

    Each listed header is added only when the request does not carry it (any case), except
    ``x-acs-content-sha256`` and the STS pair, which the generator never sends. Nothing
    else: no ``content-type``, whatever the body.
    """
    present = {name.lower() for name, _ in case["headers"]}
    fills: list[tuple[str, str]] = []

    def fill(name: str, value: str | None) -> None:
        if value is not None and name not in present:
            fills.append((name, value))

    fill("host", case["host"])
    fill("x-acs-action", case["action"])
    fill("x-acs-version", case["version"])
    date = datetime.fromtimestamp(int(case["clock"]), tz=timezone.utc)
    fill("x-acs-date", date.strftime("%Y-%m-%dT%H:%M:%SZ"))
    fill("x-acs-signature-nonce", case["nonce"])
    fill("x-acs-content-sha256", Utils.hex_encode(Utils.hash(case["body"], case["algorithm"])))
    if case["token"] is not None:
        fill("x-acs-security-token", case["token"])
        fill("x-acs-accesskey-id", case["access_key_id"])
    return fills


def modelled_headers_for_sdk(case: dict[str, Any]) -> dict[str, str]:
    """The request's headers as the SDK is given them: the case's own plus what sign() fills."""
    items = [*case["headers"], *headers_sign_fills(case)]
    headers = dict(items)
    assert len(headers) == len(items), "exact duplicate header names cannot go into a dict"
    return headers


def headers_for_sdk(signed: Request) -> dict[str, str]:
    """Every signed-request header but Authorization; case variants stay separate keys."""
    items = [
        (name, value) for name, value in signed.headers.items() if name.lower() != "authorization"
    ]
    headers = dict(items)
    assert len(headers) == len(items), "exact duplicate header names cannot go into a dict"
    return headers


@st.composite
def signing_cases(
    draw: st.DrawFn,
    algorithms: st.SearchStrategy[str],
    headers: st.SearchStrategy[list[tuple[str, str]]],
) -> dict[str, Any]:
    algorithm = draw(algorithms)
    secret = RSA_PRIVATE_KEY_PEM if algorithm == RSA_ALGORITHM else draw(hmac_secrets)
    token = draw(st.one_of(st.none(), security_tokens))
    access_key_id = draw(access_key_ids)
    if token is not None:
        access_key_id = "STS." + access_key_id
    body, content_type = draw(bodies)
    extra = draw(headers)
    if content_type is not None and not any(n.lower() == "content-type" for n, _ in extra):
        extra.append(("Content-Type" if draw(st.booleans()) else "content-type", content_type))
    query = draw(queries)
    present = {name.lower() for name, _ in extra}
    # sign(action=..., version=...) only where no header of that name is sent (a header
    # that disagrees is refused, tested in test_signer.py).
    action = None if "x-acs-action" in present else draw(actions)
    version = None if "x-acs-version" in present else draw(versions)
    return {
        "algorithm": algorithm,
        "action": action,
        "version": version,
        "access_key_id": access_key_id,
        "secret": secret,
        "token": token,
        "method": draw(methods),
        "host": draw(hosts),
        "path": draw(paths),
        "query": query,
        "query_as_pairs": draw(st.booleans()),
        "headers": extra,
        "body": body,
        "clock": draw(clock_values),
        "nonce": draw(nonces),
    }


def sign_with_aliak(case: dict[str, Any], *, sign_all_headers: bool) -> Any:
    credential = (
        AccessKey(case["access_key_id"], case["secret"])
        if case["token"] is None
        else StsCredential(case["access_key_id"], case["secret"], case["token"])
    )
    signer = Signer(
        credential,
        algorithm=case["algorithm"],
        sign_all_headers=sign_all_headers,
        clock=lambda: case["clock"],
        nonce_factory=lambda: case["nonce"],
    )
    query = case["query"]
    request = Request(
        case["method"],
        host=case["host"],
        path=case["path"],
        query=list(query.items()) if case["query_as_pairs"] else query,
        headers=case["headers"],
        body=case["body"],
    )
    return signer.sign_detailed(request, action=case["action"], version=case["version"])


def check_against_sdk(case: dict[str, Any], *, sign_all_headers: bool) -> Any:
    """Sign with aliak, re-sign its output with the SDK, compare Authorization exactly.

    Returns aliak's SigningResult, or None when the flattened query repeats a name (which
    aliak must refuse, and the SDK's dict cannot even represent).
    """
    flat = flatten_query_for_sdk(case["query"])
    if len({name for name, _ in flat}) != len(flat):
        with pytest.raises(AliakError):
            sign_with_aliak(case, sign_all_headers=sign_all_headers)
        return None

    result = sign_with_aliak(case, sign_all_headers=sign_all_headers)
    signed = result.request
    algorithm = case["algorithm"]

    # What aliak added or kept, checked against the inputs independently.
    assert dict(signed.query) == dict(flat)
    expected_hash = Utils.hex_encode(Utils.hash(case["body"], algorithm))
    assert signed.headers.get_all("x-acs-content-sha256") == [expected_hash]
    if not any(name.lower() == "x-acs-date" for name, _ in case["headers"]):
        expected_date = datetime.fromtimestamp(int(case["clock"]), tz=timezone.utc)
        assert signed.headers["x-acs-date"] == expected_date.strftime("%Y-%m-%dT%H:%M:%SZ")
    if case["token"] is not None:
        assert signed.headers["x-acs-security-token"] == case["token"]
        assert signed.headers["x-acs-accesskey-id"] == case["access_key_id"]
    assert signed.headers.get_all("Authorization") == [result.authorization]
    # Item 11: the headers sent are the caller's, plus exactly what sign() lists.
    sent = [(name, value) for name, value in signed.headers.items() if name != "Authorization"]
    assert sorted(sent) == sorted([*case["headers"], *headers_sign_fills(case)])

    # The SDK signs the modelled request, not aliak's output.
    headers = modelled_headers_for_sdk(case)
    if not sign_all_headers:
        headers = {
            name: value
            for name, value in headers.items()
            if name.lower() in ("host", "content-type") or name.lower().startswith("x-acs-")
        }
    expected = sdk_authorization(
        method=case["method"],
        path=case["path"],
        query=dict(flat),
        headers=headers,
        body=case["body"],
        algorithm=algorithm,
        access_key_id=case["access_key_id"],
        secret=case["secret"],
    )
    assert result.authorization == expected, result.canonical_request
    return result


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


@given(segments=path_segments)
@settings(max_examples=200, deadline=None)
def test_path_from_segments_is_pct_of_each_segment(segments: list[str]) -> None:
    assert path_from_segments(segments) == spec_path(segments)


@given(query=queries)
@settings(max_examples=200, deadline=None)
def test_spec_flattening_matches_sdk_query_helper_without_booleans(query: dict[str, Any]) -> None:
    # The SDK's Utils.query writes booleans as True/False (§10.3); everything else agrees.
    if contains_bool(query):
        return
    flat = flatten_query_for_sdk(query)
    if len({name for name, _ in flat}) == len(flat):
        assert Utils.query(query) == dict(flat)


@given(case=signing_cases(st.sampled_from(HMAC_ALGORITHMS), header_lists()))
@COMMON_SETTINGS
def test_authorization_matches_official_sdk_for_generated_requests(case: dict[str, Any]) -> None:
    check_against_sdk(case, sign_all_headers=True)


@given(case=signing_cases(st.just(RSA_ALGORITHM), header_lists()))
@RSA_SETTINGS
def test_rsa_authorization_matches_official_sdk_for_generated_requests(
    case: dict[str, Any],
) -> None:
    result = check_against_sdk(case, sign_all_headers=True)
    if result is not None:
        assert len(result.signature) == 512


@given(
    case=signing_cases(
        st.sampled_from(HMAC_ALGORITHMS), header_lists(names=documented_header_names)
    )
)
@COMMON_SETTINGS
def test_documented_header_set_matches_official_sdk_when_only_documented_headers_are_sent(
    case: dict[str, Any],
) -> None:
    # Every header sent is host, content-type or x-acs-*: the documented set and the
    # SDK's "sign everything" set coincide, so the SDK gets the full header dict.
    result = check_against_sdk(case, sign_all_headers=False)
    if result is not None:
        sent = {name.lower() for name, _ in result.request.headers.items()} - {"authorization"}
        assert signed_header_names(result.authorization) == sorted(sent)


@given(case=signing_cases(st.sampled_from(HMAC_ALGORITHMS), header_lists()))
@COMMON_SETTINGS
def test_documented_header_set_skips_other_headers_and_matches_sdk_over_that_set(
    case: dict[str, Any],
) -> None:
    result = check_against_sdk(case, sign_all_headers=False)
    if result is not None:
        for name in signed_header_names(result.authorization):
            assert name in ("host", "content-type") or name.startswith("x-acs-")


@pytest.mark.parametrize("algorithm", [*HMAC_ALGORITHMS, RSA_ALGORITHM])
def test_user_agent_is_signed_only_with_sign_all_headers(algorithm: str) -> None:
    secret = RSA_PRIVATE_KEY_PEM if algorithm == RSA_ALGORITHM else "YourAccessKeySecret"
    headers = {"user-agent": "AlibabaCloud (Linux) aliak/0.1", "x-acs-action": "RunInstances"}
    request = Request("POST", host="ecs.cn-shanghai.aliyuncs.com", path="/", headers=headers)

    def sign(sign_all_headers: bool) -> Any:
        signer = Signer(
            AccessKey("YourAccessKeyId", secret),
            algorithm=algorithm,
            sign_all_headers=sign_all_headers,
            clock=lambda: 1698315752.0,
            nonce_factory=lambda: "3156853299f313e23d1673dc12e1703d",
        )
        return signer.sign_detailed(request)

    documented = sign(False)
    assert "user-agent" not in signed_header_names(documented.authorization)
    assert signed_header_names(documented.authorization) == [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
    ]
    everything = sign(True)
    assert "user-agent" in signed_header_names(everything.authorization)

    for result, keep_user_agent in ((documented, False), (everything, True)):
        sdk_headers = {
            name: value
            for name, value in headers_for_sdk(result.request).items()
            if keep_user_agent or name != "user-agent"
        }
        assert result.authorization == sdk_authorization(
            method="POST",
            path="/",
            query={},
            headers=sdk_headers,
            body=b"",
            algorithm=algorithm,
            access_key_id="YourAccessKeyId",
            secret=secret,
        )


# Characters str.strip() removes but SP/HTAB trimming keeps (allowed in aliak header values).
NON_HTTP_WHITESPACE = "\x85\xa0\u1680\u2003\u2028\u2029\u202f\u205f\u3000"
unicode_header_values = st.builds(
    lambda a, b, c: a + b + c,
    st.text(alphabet=" \t" + NON_HTTP_WHITESPACE, max_size=2),
    st.text(
        alphabet=st.characters(
            exclude_categories=("Cs",),
            exclude_characters="".join(map(chr, [*range(0x0A, 0x20), 0x7F, *range(0x00, 0x09)])),
        ),
        max_size=20,
    ),
    st.text(alphabet=" \t" + NON_HTTP_WHITESPACE, max_size=2),
)


@given(
    case=signing_cases(
        st.just("ACS3-HMAC-SHA256"), header_lists(values=unicode_header_values, max_names=3)
    )
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_authorization_differs_from_sdk_only_where_trim_sets_differ(case: dict[str, Any]) -> None:
    # §5.4 "Trim set": aliak strips SP/HTAB, the SDK str.strip(). They must agree exactly
    # when no value ends in other whitespace, and (being a hash) disagree when one does.
    flat = flatten_query_for_sdk(case["query"])
    if len({name for name, _ in flat}) != len(flat):
        return
    result = sign_with_aliak(case, sign_all_headers=True)
    expected = sdk_authorization(
        method=case["method"],
        path=case["path"],
        query=dict(flat),
        headers=modelled_headers_for_sdk(case),
        body=case["body"],
        algorithm=case["algorithm"],
        access_key_id=case["access_key_id"],
        secret=case["secret"],
    )
    trims_agree = all(value.strip() == value.strip(" \t") for _, value in case["headers"])
    assert (result.authorization == expected) == trims_agree, result.canonical_request


def test_duplicate_header_names_in_other_case_match_sdk_merge() -> None:
    # §5.4 "Duplicate names": one entry, values trimmed, sorted and joined with ",".
    signer = Signer(
        AccessKey("YourAccessKeyId", "YourAccessKeySecret"),
        sign_all_headers=True,
        clock=lambda: 1698315752.0,
        nonce_factory=lambda: "3156853299f313e23d1673dc12e1703d",
    )
    request = Request(
        "GET",
        host="ecs.cn-shanghai.aliyuncs.com",
        headers=[("x-acs-test", " https\t"), ("X-ACS-TEST", "http ")],
    )
    result = signer.sign_detailed(request)
    assert "\nx-acs-test:http,https\n" in result.canonical_request
    assert result.authorization == sdk_authorization(
        method="GET",
        path="/",
        query={},
        headers=headers_for_sdk(result.request),
        body=b"",
        algorithm="ACS3-HMAC-SHA256",
        access_key_id="YourAccessKeyId",
        secret="YourAccessKeySecret",
    )


@pytest.mark.parametrize(
    "query",
    [
        {"A.1": "x", "A": ["y"]},
        {"Tag.1.Key": "k", "Tag": [{"Key": "v"}]},
        {"B.c": "1", "B": {"c": 2}},
    ],
)
def test_flattening_that_repeats_a_name_is_refused(query: dict[str, Any]) -> None:
    # The SDK's dict would silently keep one of the two; aliak's signer refuses (§5.3).
    signer = Signer(AccessKey("YourAccessKeyId", "YourAccessKeySecret"), sign_all_headers=True)
    with pytest.raises(AliakError):
        signer.sign(Request("GET", host="ecs.cn-shanghai.aliyuncs.com", query=query))


@pytest.mark.parametrize("algorithm", [*HMAC_ALGORITHMS, RSA_ALGORITHM])
@pytest.mark.parametrize("sign_all_headers", [False, True])
@pytest.mark.parametrize("body", [b"x", b'{"InstanceId":"i-1"}', bytes(range(256))])
def test_body_without_content_type_signs_as_the_official_sdk_does(
    algorithm: str, sign_all_headers: bool, body: bytes
) -> None:
    # Issue 10 item 11: the SDK's signing adds no content-type, so neither does aliak's;
    # the SDK is given the request's own headers plus the ones sign() lists, nothing more.
    secret = RSA_PRIVATE_KEY_PEM if algorithm == RSA_ALGORITHM else "YourAccessKeySecret"
    signer = Signer(
        AccessKey("YourAccessKeyId", secret),
        algorithm=algorithm,
        sign_all_headers=sign_all_headers,
        clock=lambda: 1698315752.0,
        nonce_factory=lambda: "3156853299f313e23d1673dc12e1703d",
    )
    request = Request("PUT", host="ecs.cn-shanghai.aliyuncs.com", path="/blob", body=body)
    result = signer.sign_detailed(request, action="PutBlob", version="2020-01-01")

    assert "content-type" not in result.request.headers
    payload = Utils.hex_encode(Utils.hash(body, algorithm))
    assert result.authorization == sdk_authorization(
        method="PUT",
        path="/blob",
        query={},
        headers={
            "host": "ecs.cn-shanghai.aliyuncs.com",
            "x-acs-action": "PutBlob",
            "x-acs-version": "2020-01-01",
            "x-acs-date": "2023-10-26T10:22:32Z",
            "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
            "x-acs-content-sha256": payload,
        },
        body=body,
        algorithm=algorithm,
        access_key_id="YourAccessKeyId",
        secret=secret,
    )
