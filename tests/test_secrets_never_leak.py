"""No secret reaches a repr, str, format or exception message."""

from __future__ import annotations

import logging
import pickle
from datetime import datetime, timezone

import pytest

from aliak import (
    AccessKey,
    AliakError,
    EnvironmentCredentialsProvider,
    Request,
    Secret,
    Signer,
    StsCredential,
)
from conftest import vector_by_name

SECRET = "Sup3rS3cretValueThatMustNeverPrint"
TOKEN = "T0kenValueThatMustNeverPrint"


def renderings(value: object) -> str:
    return " ".join([repr(value), str(value), f"{value}", f"{value!r}"])


def test_secret_is_masked_everywhere_and_revealed_only_on_request() -> None:
    secret = Secret(SECRET)
    assert SECRET not in renderings(secret)
    assert SECRET not in f"{secret:>60}"
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET)
    assert secret != Secret(SECRET + "x")
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_credentials_and_signers_do_not_print_secrets_or_tokens() -> None:
    key = AccessKey("LTAIexample", SECRET)
    sts = StsCredential(
        "STS.example", SECRET, TOKEN, expiration=datetime(2030, 1, 1, tzinfo=timezone.utc)
    )
    for value in (key, sts, Signer(key), Signer(sts), key.secret, sts.security_token):
        text = renderings(value)
        assert SECRET not in text
        assert TOKEN not in text


def test_rsa_signer_does_not_print_the_private_key() -> None:
    pem = vector_by_name("doc-example-rsa-sha256")["private_key_pem"]
    signer = Signer(AccessKey("YourRsaKeyId", pem), algorithm="ACS3-RSA-SHA256")
    body = pem.splitlines()[2]
    assert body not in renderings(signer)


def test_signed_request_does_not_print_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    signed = Signer(StsCredential("STS.example", SECRET, TOKEN)).sign(Request("GET", host="h"))
    assert TOKEN not in renderings(signed)
    assert SECRET not in renderings(signed)
    assert all(SECRET not in r.getMessage() and TOKEN not in r.getMessage() for r in caplog.records)


def test_environment_provider_does_not_print_the_secret() -> None:
    provider = EnvironmentCredentialsProvider(
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}
    )
    assert SECRET not in renderings(provider)


@pytest.mark.parametrize(
    "environ",
    [{}, {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv"}, {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}],
)
def test_missing_environment_variables_name_the_variable_not_the_value(
    environ: dict[str, str],
) -> None:
    with pytest.raises(AliakError) as caught:
        EnvironmentCredentialsProvider(environ)
    assert caught.value.code == "MissingParameter"
    assert "ALIBABA_CLOUD_ACCESS_KEY_" in caught.value.message
    assert SECRET not in renderings(caught.value)


def test_errors_raised_while_signing_do_not_carry_the_secret() -> None:
    signer = Signer(AccessKey("LTAIexample", SECRET))
    with pytest.raises(AliakError) as caught:
        signer.sign(Request("GET"))
    assert SECRET not in renderings(caught.value)


def test_invalid_credentials_are_refused_without_echoing_them() -> None:
    with pytest.raises(AliakError) as caught:
        AccessKey("not a valid id " + SECRET, "s")
    assert SECRET not in renderings(caught.value)
    with pytest.raises(AliakError):
        AccessKey("LTAIok", "")
    with pytest.raises(AliakError):
        StsCredential("STS.x", "s", "t", expiration=datetime(2030, 1, 1))


def test_an_rpc_request_masks_its_token_and_signature() -> None:
    from aliak import KeyManager, MemoryStore, RamRole, Request, Signer

    sts = KeyManager(MemoryStore()).assume_role(
        RamRole("1234567890123456", "r"), session_name="leak-test"
    )
    for scheme in ("RPC", "ROA"):
        signed = Signer(sts, scheme=scheme).sign(
            Request("GET", host="ecs.aliyuncs.com"), action="DescribeRegions", version="2014-05-26"
        )
        shown = renderings(signed)
        assert sts.security_token.reveal() not in shown, scheme
        assert sts.secret.reveal() not in shown, scheme
        if scheme == "RPC":
            assert dict(signed.query)["Signature"] not in shown
