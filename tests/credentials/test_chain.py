"""The default chain: the official order, absent and unreachable sources passed over, a
malformed one stopping it, the answering source kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aliak import (
    AccessKey,
    CredentialsNotFound,
    CredentialsProviderChain,
    CredentialsSourceError,
    CredentialsUnavailable,
    DefaultCredentialsProvider,
    EcsRamRoleCredentialsProvider,
    EnvironmentCredentialsProvider,
    InvalidParameter,
    StaticCredentialsProvider,
)

from ._fakes import FakeMetadata, FakeSts, issued, serve

ENV_KEY = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret",
}
NO_ECS = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}


def config_json(home: Path, key_id: str = "LTAIcli") -> None:
    path = home / ".aliyun" / "config.json"
    path.parent.mkdir(parents=True)
    profile = {"name": "default", "mode": "AK", "access_key_id": key_id, "access_key_secret": "s"}
    path.write_text(json.dumps({"current": "default", "profiles": [profile]}))


def credentials_ini(home: Path, key_id: str = "LTAIini") -> None:
    path = home / ".alibabacloud" / "credentials.ini"
    path.parent.mkdir(parents=True)
    path.write_text(
        f"[default]\ntype = access_key\naccess_key_id = {key_id}\naccess_key_secret = s\n"
    )


def chain(home: Path, environ: dict[str, str], **options: str) -> DefaultCredentialsProvider:
    return DefaultCredentialsProvider(environ=environ, home=home, **options)  # type: ignore[arg-type]


def test_environment_variables_come_first(tmp_path: Path) -> None:
    config_json(tmp_path)
    assert chain(tmp_path, {**ENV_KEY, **NO_ECS}).get_credential().access_key_id == "LTAIenv"


def test_rrsa_comes_before_the_files(tmp_path: Path) -> None:
    config_json(tmp_path)
    token = tmp_path / "token"
    token.write_text("oidc-token")
    with serve(FakeSts({})) as sts:
        environ = {
            "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/r",
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/p",
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token),
            **NO_ECS,
        }
        assert (
            chain(tmp_path, environ, sts_endpoint=sts.url).get_credential().access_key_id
            == "STS.issued1"
        )


def test_config_json_comes_before_credentials_ini(tmp_path: Path) -> None:
    config_json(tmp_path)
    credentials_ini(tmp_path)
    assert chain(tmp_path, NO_ECS).get_credential().access_key_id == "LTAIcli"


def test_credentials_ini_is_read_when_config_json_is_absent(tmp_path: Path) -> None:
    credentials_ini(tmp_path)
    assert chain(tmp_path, NO_ECS).get_credential().access_key_id == "LTAIini"


def test_the_profile_variable_names_the_section_of_both_files(tmp_path: Path) -> None:
    credentials_ini(tmp_path)
    with pytest.raises(CredentialsNotFound) as caught:
        chain(tmp_path, {"ALIBABA_CLOUD_PROFILE": "prod", **NO_ECS}).get_credential()
    assert "[prod]" in str(caught.value)


def test_the_instance_role_comes_after_the_files(tmp_path: Path) -> None:
    with serve(FakeMetadata()) as metadata:
        provider = chain(tmp_path, {}, metadata_url=metadata.url)
        assert provider.get_credential().access_key_id == "STS.issued1"
        assert isinstance(provider.provider, EcsRamRoleCredentialsProvider)
        provider.provider.close()


def test_an_unreachable_metadata_service_passes_to_the_credentials_uri(tmp_path: Path) -> None:
    with serve(FakeMetadata()) as down:
        unreachable = down.url
    with serve(lambda seen: (200, {"Code": "Success", **issued(5, 4_000_000_000)})) as uri:
        environ = {"ALIBABA_CLOUD_CREDENTIALS_URI": uri.url}
        provider = chain(tmp_path, environ, metadata_url=unreachable)
        assert provider.get_credential().access_key_id == "STS.issued5"


def test_a_malformed_file_stops_the_chain_instead_of_signing_as_another_identity(
    tmp_path: Path,
) -> None:
    (tmp_path / ".aliyun").mkdir()
    (tmp_path / ".aliyun" / "config.json").write_text("{")
    credentials_ini(tmp_path)
    with pytest.raises(CredentialsSourceError):
        chain(tmp_path, NO_ECS).get_credential()


def test_a_bad_key_in_the_environment_stops_the_chain(tmp_path: Path) -> None:
    config_json(tmp_path)
    environ = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "bad id!", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}
    with pytest.raises(InvalidParameter):
        chain(tmp_path, {**environ, **NO_ECS}).get_credential()


def test_nothing_anywhere_lists_every_source_tried(tmp_path: Path) -> None:
    with pytest.raises(CredentialsNotFound) as caught:
        chain(tmp_path, NO_ECS).get_credential()
    text = str(caught.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in text
    assert "config.json" in text
    assert "credentials.ini" in text


def test_the_source_that_answered_is_kept() -> None:
    calls: list[str] = []

    def absent() -> StaticCredentialsProvider:
        calls.append("absent")
        raise CredentialsUnavailable("nowhere")

    def present() -> StaticCredentialsProvider:
        calls.append("present")
        return StaticCredentialsProvider(AccessKey("LTAIkept", "s"))

    provider = CredentialsProviderChain([absent, present])
    first = provider.get_credential()
    assert provider.get_credential() is first
    assert calls == ["absent", "present"]


def test_a_provider_class_is_a_source_of_a_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIclass")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s")
    assert (
        CredentialsProviderChain([EnvironmentCredentialsProvider]).get_credential().access_key_id
        == "LTAIclass"
    )


def test_no_provider_prints_a_secret_or_token(tmp_path: Path) -> None:
    path = tmp_path / ".aliyun" / "config.json"
    path.parent.mkdir(parents=True)
    profile = {
        "name": "t",
        "mode": "StsToken",
        "access_key_id": "STS.t",
        "access_key_secret": "the-secret",
        "sts_token": "the-token",
    }
    path.write_text(json.dumps({"current": "t", "profiles": [profile]}))
    provider = chain(tmp_path, NO_ECS)
    provider.get_credential()
    texts = [
        repr(provider),
        str(provider),
        repr(provider.provider),
        repr(provider.provider.get_credential()),
    ]
    assert all("the-secret" not in text and "the-token" not in text for text in texts)
    assert "STS.t" in texts[-1]
