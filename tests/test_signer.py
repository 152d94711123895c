"""Signer behaviour: what it fills, what it keeps, streaming, STS, and bad input."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aliak import AccessKey, AliakError, Request, Signer, StsCredential
from aliak.algorithms import get_algorithm
from aliak.errors import SignatureDoesNotMatch
from aliak.timestamps import parse_acs_date
from conftest import vector_by_name

DOC_DATE = "2023-10-26T10:22:32Z"
DOC_NONCE = "3156853299f313e23d1673dc12e1703d"
DOC_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
RSA_VECTOR = vector_by_name("doc-example-rsa-sha256")


def doc_signer(**options: object) -> Signer:
    return Signer(
        AccessKey("YourAccessKeyId", "YourAccessKeySecret"),
        clock=lambda: float(parse_acs_date(DOC_DATE)),
        nonce_factory=lambda: DOC_NONCE,
        **options,  # type: ignore[arg-type]
    )


def doc_request(**changes: object) -> Request:
    fields: dict[str, object] = {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "query": {
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        },
    }
    fields.update(changes)
    return Request("POST", **fields)  # type: ignore[arg-type]


def test_sign_fills_every_missing_header_and_matches_the_documented_signature() -> None:
    signed = doc_signer().sign(doc_request(), action="RunInstances", version="2014-05-26")
    assert [name for name, _ in signed.headers.items()] == [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
        "Authorization",
    ]
    assert signed.headers["x-acs-date"] == DOC_DATE
    assert signed.headers["Authorization"].endswith(f"Signature={DOC_SIGNATURE}")


def test_sign_returns_a_new_request_and_leaves_the_input_unchanged() -> None:
    request = doc_request()
    before = request.headers.items()
    signed = doc_signer().sign(request, action="RunInstances", version="2014-05-26")
    assert signed is not request
    assert request.headers.items() == before
    assert "Authorization" not in request.headers


def test_headers_already_present_are_kept_and_signed_as_they_are() -> None:
    given = {"x-acs-date": "2020-01-01T00:00:00Z", "x-acs-signature-nonce": "mine", "Host": "alt"}
    signed = doc_signer().sign(doc_request(headers=given))
    assert signed.headers["x-acs-date"] == "2020-01-01T00:00:00Z"
    assert signed.headers["x-acs-signature-nonce"] == "mine"
    assert signed.headers.get_all("host") == ["alt"]


def test_action_that_conflicts_with_a_present_header_is_refused() -> None:
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(doc_request(headers={"x-acs-action": "A"}), action="B")
    assert caught.value.message == 'The specified parameter "x-acs-action" is not valid.'


def test_default_signs_host_content_type_and_x_acs_only() -> None:
    request = doc_request(headers={"User-Agent": "ua", "Content-Type": "application/json"})
    signed = doc_signer().sign_detailed(request)
    signed_list = signed.authorization.split("SignedHeaders=")[1].split(",")[0]
    assert "user-agent" not in signed_list.split(";")
    assert "content-type" in signed_list.split(";")
    everything = doc_signer(sign_all_headers=True).sign_detailed(request)
    assert "user-agent" in everything.authorization


LISTED = ["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"]


@pytest.mark.parametrize(
    "body",
    [b"", b"x", b'{"a":1}', "file", "iterable"],
    ids=["empty", "byte", "json", "file", "iterable"],
)
def test_sign_adds_only_the_listed_headers_whatever_the_body(body: object) -> None:
    # Issue 10 item 11: no content-type is invented for a body that has none (the
    # official SDK's signing adds none, so the bytes signed would differ).
    if body == "file":
        body = io.BytesIO(b"file body")
    elif body == "iterable":
        body = iter([b"one", b"shot"])
    signed = doc_signer().sign_detailed(
        doc_request(body=body), action="RunInstances", version="2014-05-26"
    )
    added = [name for name, _ in signed.request.headers.items()]
    assert added == [*LISTED[:1], "x-acs-action", "x-acs-version", *LISTED[1:], "Authorization"]
    assert "content-type" not in signed.authorization
    sts = Signer(StsCredential("STS.abc", "s3cret", "token")).sign(doc_request(body=b"x"))
    assert [name for name, _ in sts.headers.items()] == [
        *LISTED,
        "x-acs-security-token",
        "x-acs-accesskey-id",
        "Authorization",
    ]


def test_a_content_type_given_is_kept_and_signed_as_it_is() -> None:
    given = {"Content-Type": "application/json; charset=utf-8"}
    signed = doc_signer().sign_detailed(doc_request(headers=given, body=b'{"a":1}'))
    assert signed.request.headers.get_all("content-type") == ["application/json; charset=utf-8"]
    assert "\ncontent-type:application/json; charset=utf-8\n" in signed.canonical_request


def test_sts_credential_adds_security_token_and_access_key_id_and_signs_them() -> None:
    signer = Signer(StsCredential("STS.abc", "s3cret", "token-value"))
    result = signer.sign_detailed(doc_request())
    headers = result.request.headers
    assert headers["x-acs-security-token"] == "token-value"
    assert headers["x-acs-accesskey-id"] == "STS.abc"
    assert "x-acs-security-token:token-value\n" in result.canonical_request
    assert "Credential=STS.abc," in result.authorization


def test_missing_host_is_missing_parameter() -> None:
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(Request("GET"))
    assert caught.value.code == "MissingParameter"
    assert '"host"' in caught.value.message


def test_an_already_signed_request_is_refused_so_nonces_are_never_reused() -> None:
    signed = doc_signer().sign(doc_request())
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(signed)
    assert "Authorization" in caught.value.message


def test_repeated_query_names_are_refused() -> None:
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(doc_request(query=[("A", "1"), ("A", "2")]))
    assert "query['A']" in caught.value.message


def test_a_content_hash_header_that_does_not_match_the_body_is_refused() -> None:
    request = doc_request(headers={"x-acs-content-sha256": "00"}, body=b"x")
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(request)
    assert "x-acs-content-sha256" in caught.value.message


def test_default_nonce_is_fresh_32_hex_and_date_is_utc_seconds() -> None:
    signer = Signer(AccessKey("k", "s"))
    first = signer.sign(doc_request()).headers
    second = signer.sign(doc_request()).headers
    assert re.fullmatch(r"[0-9a-f]{32}", first["x-acs-signature-nonce"])
    assert first["x-acs-signature-nonce"] != second["x-acs-signature-nonce"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["x-acs-date"])


def test_date_follows_the_clock_across_seconds() -> None:
    now = [parse_acs_date(DOC_DATE) + 0.9]
    signer = Signer(AccessKey("k", "s"), clock=lambda: now[0])
    assert signer.sign(doc_request()).headers["x-acs-date"] == DOC_DATE
    now[0] += 0.2
    assert signer.sign(doc_request()).headers["x-acs-date"] == "2023-10-26T10:22:33Z"


BODY = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk


def test_file_body_is_hashed_incrementally_to_the_same_signature_and_rewound() -> None:
    in_memory = doc_signer().sign_detailed(doc_request(body=BODY))
    stream = io.BytesIO(b"prefix" + BODY)
    stream.seek(6)
    streamed = doc_signer().sign_detailed(doc_request(body=stream))
    assert streamed.authorization == in_memory.authorization
    assert streamed.request.body is stream
    assert stream.tell() == 6


def test_one_shot_iterable_body_is_spooled_so_it_can_still_be_sent() -> None:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(BODY), 100_000):
            yield BODY[start : start + 100_000]

    streamed = doc_signer().sign_detailed(doc_request(body=chunks()))
    assert (
        streamed.authorization == doc_signer().sign_detailed(doc_request(body=BODY)).authorization
    )
    assert streamed.request.body.read() == BODY  # type: ignore[union-attr]


def test_body_iterator_that_raises_gives_an_aliak_error_naming_the_body() -> None:
    def failing() -> Iterator[bytes]:
        yield b"part"
        raise OSError("disk gone")

    request = doc_request(body=failing())
    headers_before = request.headers.items()
    with pytest.raises(AliakError) as caught:
        doc_signer().sign(request)
    assert caught.value.message == 'The specified parameter "body" is not valid.'
    assert isinstance(caught.value.__cause__, OSError)
    assert request.headers.items() == headers_before


def test_a_stream_yielding_text_is_refused() -> None:
    with pytest.raises(AliakError, match="body"):
        doc_signer().sign(doc_request(body=iter(["text"])))


def test_a_failing_file_is_rewound_and_reported() -> None:
    class Flaky(io.BytesIO):
        def readinto(self, buffer: object) -> int:  # type: ignore[override]
            raise OSError("io error")

    stream = Flaky(b"abc")
    with pytest.raises(AliakError, match="body"):
        doc_signer().sign(doc_request(body=stream))
    assert stream.tell() == 0


def test_unknown_algorithm_is_an_aliak_error() -> None:
    with pytest.raises(AliakError) as caught:
        Signer(AccessKey("k", "s"), algorithm="ACS3-HMAC-SHA1")
    assert caught.value.code == "InvalidSignatureMethod"
    assert "ACS3-HMAC-SHA1" in str(caught.value)


def _rsa_private_forms() -> dict[str, str]:
    key = serialization.load_pem_private_key(RSA_VECTOR["private_key_pem"].encode(), None)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "pkcs8-pem": RSA_VECTOR["private_key_pem"],
        "pkcs1-pem": pkcs1,
        "bare-base64": base64.b64encode(der).decode(),
        "bare-base64-wrapped": "\n".join(
            base64.b64encode(der).decode()[i : i + 64] for i in range(0, 2000, 64)
        ),
    }


@pytest.mark.parametrize("form", list(_rsa_private_forms()))
def test_rsa_private_key_forms_all_give_the_vector_signature(form: str) -> None:
    signer = Signer(
        AccessKey("YourRsaKeyId", _rsa_private_forms()[form]),
        algorithm="ACS3-RSA-SHA256",
        clock=lambda: float(parse_acs_date(DOC_DATE)),
        nonce_factory=lambda: DOC_NONCE,
    )
    result = signer.sign_detailed(doc_request(), action="RunInstances", version="2014-05-26")
    assert result.signature == RSA_VECTOR["expected"]["signature"]


def test_rsa_signature_verifies_with_the_public_key_and_fails_when_altered() -> None:
    algorithm = get_algorithm("ACS3-RSA-SHA256")
    private = algorithm.signing_key(RSA_VECTOR["private_key_pem"])
    public = algorithm.verifying_key(RSA_VECTOR["public_key_pem"])
    signature = private.sign(b"message")
    public.verify(b"message", signature)
    with pytest.raises(SignatureDoesNotMatch):
        public.verify(b"messagE", signature)
    with pytest.raises(SignatureDoesNotMatch):
        public.verify(b"message", "zz")


@pytest.mark.parametrize("name", ["ACS3-HMAC-SHA256", "ACS3-HMAC-SM3"])
def test_hmac_verify_accepts_its_signature_in_any_case_and_refuses_others(name: str) -> None:
    key = get_algorithm(name).signing_key("secret")
    signature = key.sign(b"m")
    key.verify(b"m", signature.upper())
    with pytest.raises(SignatureDoesNotMatch):
        key.verify(b"m", signature[:-1] + ("0" if signature[-1] != "0" else "1"))


def _other_keys() -> dict[str, str]:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    curve = ec.generate_private_key(ec.SECP256R1())

    def pem(key: object) -> str:
        return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    return {
        "garbage": "not a key at all!",
        "truncated-pem": RSA_VECTOR["private_key_pem"][:200],
        "rsa-1024": pem(small),
        "ec-p256": pem(curve),
        "public-key-as-private": RSA_VECTOR["public_key_pem"],
    }


@pytest.mark.parametrize("kind", list(_other_keys()))
def test_an_rsa_key_that_does_not_parse_is_an_aliak_error_without_the_key(kind: str) -> None:
    material = _other_keys()[kind]
    with pytest.raises(AliakError) as caught:
        Signer(AccessKey("k", material), algorithm="ACS3-RSA-SHA256")
    assert caught.value.message == 'The specified parameter "PrivateKey" is not valid.'
    fragment = material[40:80] or material
    assert fragment not in str(caught.value)
    assert fragment not in repr(caught.value)


def test_a_provider_is_asked_each_time_and_a_rotated_credential_is_used() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.credential = AccessKey("first", "s1")

        def get_credential(self) -> AccessKey:
            return self.credential

    provider = Rotating()
    signer = Signer(provider)
    assert "Credential=first," in signer.sign(doc_request()).headers["Authorization"]
    provider.credential = AccessKey("second", "s2")
    assert "Credential=second," in signer.sign(doc_request()).headers["Authorization"]


def test_from_environment_reads_the_official_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret")
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    assert Signer.from_environment().access_key_id == "LTAIenv"
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "tok")
    signed = Signer.from_environment().sign(doc_request())
    assert signed.headers["x-acs-security-token"] == "tok"


def test_from_default_chain_reads_a_profile_file_when_the_environment_has_no_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                 "ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_ROLE_ARN",
                 "ALIBABA_CLOUD_CREDENTIALS_URI", "ALIBABA_CLOUD_PROFILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
    ini = tmp_path / "chain.ini"
    ini.write_text("[default]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = s\n")
    monkeypatch.setenv("ALIBABA_CLOUD_CREDENTIALS_FILE", str(ini))
    signer = Signer.from_default_chain()
    assert signer.access_key_id == "LTAIini"
    assert "Credential=LTAIini," in signer.sign(doc_request()).headers["Authorization"]


def test_sign_refuses_something_that_is_not_a_request() -> None:
    with pytest.raises(TypeError):
        doc_signer().sign({"method": "GET"})  # type: ignore[arg-type]
