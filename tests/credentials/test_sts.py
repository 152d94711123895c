"""RAM role ARN and OIDC (RRSA) against a fake STS on 127.0.0.1 whose AssumeRole checks
the RPC V2 signature with aliak's legacy functions; the request compared with the
official library's own string to sign."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliak import (
    AccessKey,
    CredentialsSourceError,
    CredentialsUnavailable,
    OIDCRoleArnCredentialsProvider,
    RamRoleArnCredentialsProvider,
    StsCredential,
)
from aliak.credentials import (
    CredentialsNotFound,
    assume_role_query,
    parse_expiration,
    resolve_sts_endpoint,
)
from aliak.legacy import rpc_string_to_sign

from ._fakes import FakeSts, iso, serve

KEY = AccessKey("LTAIsigner0000000001", "signer-secret-value")
ROLE = "acs:ram::1234567890123456:role/deployer"


def test_assume_role_is_signed_and_the_answer_becomes_an_sts_credential() -> None:
    sts = FakeSts({KEY.access_key_id: KEY.secret.reveal()})
    with serve(sts) as server:
        provider = RamRoleArnCredentialsProvider(
            KEY, role_arn=ROLE, role_session_name="ci", sts_endpoint=server.url
        )
        credential = provider.get_credential()
    assert isinstance(credential, StsCredential)
    assert credential.access_key_id == "STS.issued1"
    assert credential.security_token.reveal() == "issued-token-1"
    params = server.seen[0].params
    assert params["Action"] == "AssumeRole"
    assert params["Version"] == "2015-04-01"
    assert params["RoleArn"] == ROLE
    assert params["RoleSessionName"] == "ci"
    assert params["DurationSeconds"] == "3600"
    assert params["SignatureMethod"] == "HMAC-SHA1"
    assert params["SignatureVersion"] == "1.0"


def test_a_wrong_secret_is_refused_by_the_fake_sts_signature_check() -> None:
    sts = FakeSts({KEY.access_key_id: "another-secret"})
    with serve(sts) as server:
        provider = RamRoleArnCredentialsProvider(KEY, role_arn=ROLE, sts_endpoint=server.url)
        with pytest.raises(CredentialsUnavailable) as caught:
            provider.get_credential()
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert KEY.secret.reveal() not in str(caught.value)


def test_a_chained_role_signs_with_the_previous_roles_token() -> None:
    sts = FakeSts({KEY.access_key_id: KEY.secret.reveal()})
    with serve(sts) as server:
        first = RamRoleArnCredentialsProvider(KEY, role_arn=ROLE, sts_endpoint=server.url)
        # the fake knows the first role's issued key too, as STS knows its own
        sts.keys["STS.issued1"] = "issued-secret-1"
        second = RamRoleArnCredentialsProvider(first, role_arn=ROLE + "-2", sts_endpoint=server.url)
        assert second.get_credential().access_key_id == "STS.issued2"
    chained = server.seen[1].params
    assert chained["AccessKeyId"] == "STS.issued1"
    assert chained["SecurityToken"] == "issued-token-1"


def test_policy_and_external_id_are_sent_and_signed() -> None:
    sts = FakeSts({KEY.access_key_id: KEY.secret.reveal()})
    policy = '{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*"}]}'
    with serve(sts) as server:
        RamRoleArnCredentialsProvider(
            KEY, role_arn=ROLE, policy=policy, external_id="ext-1", sts_endpoint=server.url
        ).get_credential()
    assert server.seen[0].params["Policy"] == policy
    assert server.seen[0].params["ExternalId"] == "ext-1"


def test_the_role_is_refreshed_through_sts_when_stale() -> None:
    now = [1_700_000_000.0]
    sts = FakeSts({KEY.access_key_id: KEY.secret.reveal()}, clock=lambda: now[0])
    with serve(sts) as server:
        provider = RamRoleArnCredentialsProvider(
            KEY, role_arn=ROLE, sts_endpoint=server.url, clock=lambda: now[0]
        )
        assert provider.get_credential().access_key_id == "STS.issued1"
        now[0] += 3600 - 15 * 60
        assert provider.get_credential().access_key_id == "STS.issued2"
    assert server.seen[1].params["Timestamp"] == iso(now[0])


def test_the_request_is_the_official_librarys_string_to_sign() -> None:
    from alibabacloud_credentials.utils import parameter_helper

    query = dict(
        assume_role_query(
            KEY,
            role_arn=ROLE,
            role_session_name="session-1",
            duration_seconds=3600,
            timestamp="2026-12-03T19:00:00Z",
            nonce="8f0b5a6e-aaaa-bbbb-cccc-0123456789ab",
        )
    )
    signature = query.pop("Signature")
    official = parameter_helper.compose_string_to_sign("GET", query)
    assert rpc_string_to_sign("GET", query.items()) == official
    assert parameter_helper.sign_string(official, KEY.secret.reveal() + "&") == signature


@pytest.mark.parametrize("duration", [0, 899, "3600", True])
def test_a_duration_below_900_seconds_or_not_a_number_is_refused(duration: object) -> None:
    with pytest.raises(CredentialsSourceError) as caught:
        RamRoleArnCredentialsProvider(KEY, role_arn=ROLE, duration_seconds=duration)  # type: ignore[arg-type]
    assert "duration_seconds" in caught.value.message


def test_an_empty_role_arn_is_refused_naming_the_field() -> None:
    with pytest.raises(CredentialsSourceError) as caught:
        RamRoleArnCredentialsProvider(KEY, role_arn="")
    assert "role_arn" in caught.value.message


@pytest.mark.parametrize(
    ("options", "environ", "url"),
    [
        ({}, {}, "https://sts.aliyuncs.com"),
        ({"region": "cn-beijing"}, {}, "https://sts.cn-beijing.aliyuncs.com"),
        ({}, {"ALIBABA_CLOUD_STS_REGION": "cn-shanghai"}, "https://sts.cn-shanghai.aliyuncs.com"),
        (
            {},
            {
                "ALIBABA_CLOUD_STS_REGION": "cn-shanghai",
                "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true",
            },
            "https://sts-vpc.cn-shanghai.aliyuncs.com",
        ),
        ({"region": "cn-hangzhou", "vpc": True}, {}, "https://sts-vpc.cn-hangzhou.aliyuncs.com"),
        ({"endpoint": "sts.example.internal"}, {}, "https://sts.example.internal"),
        ({"endpoint": "http://127.0.0.1:9/"}, {}, "http://127.0.0.1:9"),
    ],
)
def test_the_sts_endpoint_follows_the_official_rules(
    options: dict[str, object], environ: dict[str, str], url: str
) -> None:
    assert resolve_sts_endpoint(environ=environ, **options) == url  # type: ignore[arg-type]


def test_an_unreachable_sts_is_unavailable_not_a_socket_error() -> None:
    with serve(lambda seen: (200, {})) as server:
        url = server.url
    provider = RamRoleArnCredentialsProvider(KEY, role_arn=ROLE, sts_endpoint=url, timeout=2.0)
    with pytest.raises(CredentialsUnavailable):
        provider.get_credential()


@pytest.mark.parametrize(
    "answer",
    [
        (200, "not json"),
        (200, {"RequestId": "r"}),
        (200, {"Credentials": {"AccessKeyId": "STS.x", "AccessKeySecret": "s"}}),
        (
            200,
            {
                "Credentials": {
                    "AccessKeyId": "STS.x",
                    "AccessKeySecret": "s",
                    "SecurityToken": "t",
                    "Expiration": "tomorrow",
                }
            },
        ),
        (403, {"Code": "NoPermission", "Message": "You are not authorized", "RequestId": "r1"}),
    ],
)
def test_a_malformed_or_refused_sts_answer_is_unavailable(answer: tuple[int, object]) -> None:
    with serve(lambda seen: answer) as server:
        provider = RamRoleArnCredentialsProvider(KEY, role_arn=ROLE, sts_endpoint=server.url)
        with pytest.raises(CredentialsUnavailable):
            provider.get_credential()


def test_oidc_posts_the_token_file_anonymously_and_rereads_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("oidc-token\n")
    now = [time.time()]
    sts = FakeSts({}, clock=lambda: now[0])
    with serve(sts) as server:
        provider = OIDCRoleArnCredentialsProvider.from_environment(
            {
                "ALIBABA_CLOUD_ROLE_ARN": ROLE,
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1234567890123456:oidc-provider/ack",
                "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token_file),
                "ALIBABA_CLOUD_ROLE_SESSION_NAME": "pod-1",
            },
            sts_endpoint=server.url,
            clock=lambda: now[0],
        )
        assert provider.get_credential().access_key_id == "STS.issued1"
        sts.oidc_token = "rotated-token"
        token_file.write_text("rotated-token")
        now[0] += 3600
        assert provider.get_credential().access_key_id == "STS.issued2"
    seen = server.seen[0]
    assert seen.method == "POST"
    assert seen.params["Action"] == "AssumeRoleWithOIDC"
    assert "OIDCToken" not in seen.params  # in the body, not the URL
    assert "AccessKeyId" not in seen.params  # anonymous: no key, no signature
    assert "Signature" not in seen.params
    assert seen.form()["RoleSessionName"] == "pod-1"
    assert seen.form()["OIDCProviderArn"].endswith("oidc-provider/ack")


def test_oidc_needs_all_three_variables() -> None:
    with pytest.raises(CredentialsNotFound) as caught:
        OIDCRoleArnCredentialsProvider.from_environment({"ALIBABA_CLOUD_ROLE_ARN": ROLE})
    assert caught.value.parameter == "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"


def test_a_missing_token_file_names_the_file(tmp_path: Path) -> None:
    provider = OIDCRoleArnCredentialsProvider(
        role_arn=ROLE,
        oidc_provider_arn="acs:ram::1:oidc-provider/x",
        oidc_token_file=tmp_path / "absent",
        sts_endpoint="http://127.0.0.1:9",
    )
    with pytest.raises(CredentialsSourceError) as caught:
        provider.get_credential()
    assert str(tmp_path / "absent") in caught.value.message


@given(st.integers(min_value=0, max_value=253402300799))
def test_expiration_round_trips_every_utc_second(seconds: int) -> None:
    assert parse_expiration(iso(seconds), source="s").timestamp() == seconds


@given(st.text(max_size=30))
def test_expiration_parsing_refuses_anything_else_with_an_aliak_error(text: str) -> None:
    try:
        moment = parse_expiration(text, source="s")
    except CredentialsUnavailable:
        return
    assert iso(moment.timestamp()) == text


def test_an_echoed_string_to_sign_is_left_out_of_the_error() -> None:
    token = "source-security-token-never-shown"
    message = f"Specified signature is not matched with our calculation. server string to sign is:GET&%2F&SecurityToken%3D{token}"
    answer = (400, {"Code": "SignatureDoesNotMatch", "Message": message, "RequestId": "r"})
    with serve(lambda seen: answer) as server:
        provider = RamRoleArnCredentialsProvider(
            StsCredential("STS.source", "s", token), role_arn=ROLE, sts_endpoint=server.url
        )
        with pytest.raises(CredentialsUnavailable) as caught:
            provider.get_credential()
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert token not in str(caught.value)
