"""The ECS instance role against a fake metadata service (IMDSv2 first, the IMDSv1
fallback, v1 disabled, the background job), and a credentials URI against a fake."""

from __future__ import annotations

import threading

import pytest

from aliak import (
    CredentialsUnavailable,
    CredentialsURIProvider,
    EcsRamRoleCredentialsProvider,
    StsCredential,
)
from aliak.credentials import CredentialsNotFound

from ._fakes import FakeMetadata, Seen, issued, serve

T0 = 1_700_000_000.0
HOUR = 3600.0


def ecs(url: str, **options: object) -> EcsRamRoleCredentialsProvider:
    options.setdefault("environ", {})
    options.setdefault("background_refresh", False)
    return EcsRamRoleCredentialsProvider(metadata_url=url, **options)  # type: ignore[arg-type]


def test_imdsv2_token_then_role_discovery_then_credentials() -> None:
    metadata = FakeMetadata()
    metadata.require_token = True
    with serve(metadata) as server:
        credential = ecs(server.url).get_credential()
    assert isinstance(credential, StsCredential)
    assert credential.access_key_id == "STS.issued1"
    assert [(seen.method, seen.path) for seen in server.seen] == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/ram/security-credentials/"),
        ("GET", "/latest/meta-data/ram/security-credentials/EcsRole"),
    ]
    assert server.seen[2].headers["x-aliyun-ecs-metadata-token"] == "imds-session-token"


def test_the_role_name_from_the_environment_skips_discovery() -> None:
    metadata = FakeMetadata(role="Named")
    with serve(metadata) as server:
        ecs(server.url, environ={"ALIBABA_CLOUD_ECS_METADATA": "Named"}).get_credential()
    assert all(seen.path != "/latest/meta-data/ram/security-credentials/" for seen in server.seen)


def test_without_imdsv2_it_falls_back_to_v1() -> None:
    with serve(FakeMetadata(v2=False)) as server:
        assert ecs(server.url).get_credential().access_key_id == "STS.issued1"
    assert "x-aliyun-ecs-metadata-token" not in server.seen[-1].headers


def test_with_v1_disabled_a_missing_token_is_an_error() -> None:
    with serve(FakeMetadata(v2=False)) as server:
        provider = ecs(server.url, environ={"ALIBABA_CLOUD_IMDSV1_DISABLED": "true"})
        with pytest.raises(CredentialsUnavailable) as caught:
            provider.get_credential()
    assert "token" in str(caught.value)
    assert len(server.seen) == 1


def test_an_answer_without_success_is_unavailable() -> None:
    def answer(seen: Seen) -> tuple[int, object]:
        if seen.path == "/latest/api/token":
            return 200, "t"
        return 200, {"Code": "Failed"} if seen.path.endswith("/R") else "R"

    with serve(answer) as server, pytest.raises(CredentialsUnavailable):
        ecs(server.url).get_credential()


def test_the_instance_role_is_prefetched_an_hour_after_each_fetch() -> None:
    now = [T0]
    metadata = FakeMetadata(clock=lambda: now[0])
    with serve(metadata) as server:
        provider = ecs(server.url, clock=lambda: now[0])
        first = provider.get_credential()
        now[0] += HOUR - 1
        provider.refresh_if_due()
        assert provider.get_credential() is first
        now[0] += 1
        provider.refresh_if_due()  # what the once-a-minute job runs
        assert provider.get_credential().access_key_id == "STS.issued2"


def test_metadata_down_serves_the_last_credential_until_it_expires() -> None:
    now = [T0]
    metadata = FakeMetadata(clock=lambda: now[0])
    with serve(metadata) as server:
        provider = ecs(server.url, clock=lambda: now[0])
        first = provider.get_credential()
        metadata.down = True
        now[0] += 6 * HOUR - 1
        assert provider.get_credential() is first
        assert isinstance(provider.last_error, CredentialsUnavailable)
        now[0] += 1
        with pytest.raises(CredentialsUnavailable):
            provider.get_credential()


def test_the_background_job_refreshes_without_any_caller() -> None:
    now = [T0]
    refreshed = threading.Event()
    metadata = FakeMetadata(clock=lambda: now[0])

    def answer(seen: Seen) -> tuple[int, object]:
        result = metadata(seen)
        if metadata.issued == 2:
            refreshed.set()
        return result

    with serve(answer) as server:
        provider = EcsRamRoleCredentialsProvider(
            metadata_url=server.url, environ={}, clock=lambda: now[0], job_interval=0.01
        )
        try:
            provider.get_credential()
            now[0] += HOUR
            assert refreshed.wait(30)
        finally:
            provider.close()


def test_a_credentials_uri_answer_is_the_credential() -> None:
    with serve(lambda seen: (200, {"Code": "Success", **issued(7, T0 + HOUR)})) as server:
        provider = CredentialsURIProvider.from_environment(
            {"ALIBABA_CLOUD_CREDENTIALS_URI": server.url + "/creds?x=1"}, clock=lambda: T0
        )
        credential = provider.get_credential()
    assert credential.access_key_id == "STS.issued7"
    assert server.seen[0].path == "/creds"
    assert server.seen[0].params == {"x": "1"}
    assert "x=1" not in provider.source  # a query may carry a token


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"Code": "Success"}),
        (200, {"Code": "Failure"}),
        (200, {"Code": "Success", "AccessKeyId": "STS.x"}),
        (200, [1, 2]),
    ],
)
def test_a_credentials_uri_that_does_not_answer_success_is_unavailable(
    answer: tuple[int, object],
) -> None:
    with serve(lambda seen: answer) as server, pytest.raises(CredentialsUnavailable):
        CredentialsURIProvider(server.url).get_credential()


def test_a_credentials_uri_needs_its_variable() -> None:
    with pytest.raises(CredentialsNotFound):
        CredentialsURIProvider.from_environment({})
