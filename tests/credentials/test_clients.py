"""The chain where users meet it: the requests and httpx auth classes on a refreshing
provider (each request carries the provider's current credential; the async client
refreshes off the event loop), and ``aliak sign --profile NAME``."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from aliak import AccessKey, RamRoleArnCredentialsProvider
from aliak.cli import main
from aliak.integrations.httpx import AliakAuth as HttpxAuth
from aliak.integrations.requests import AliakAuth as RequestsAuth

from ._fakes import FakeServer, FakeSts, serve

KEY = AccessKey("LTAIsigner0000000001", "signer-secret-value")
ROLE = "acs:ram::1234567890123456:role/app"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sts(clock: Clock) -> Iterator[tuple[FakeSts, FakeServer]]:
    fake = FakeSts({KEY.access_key_id: KEY.secret.reveal()}, clock=clock)
    with serve(fake) as server:
        yield fake, server


@pytest.fixture
def api() -> Iterator[FakeServer]:
    with serve(lambda seen: (200, {"ok": True})) as server:
        yield server


def signed_with(server: FakeServer, index: int) -> tuple[str, str]:
    headers = server.seen[index].headers
    match = re.search(r"Credential=([^,]+)", headers["authorization"])
    assert match is not None
    return match.group(1), headers["x-acs-security-token"]


def role(clock: Clock, sts_server: FakeServer) -> RamRoleArnCredentialsProvider:
    return RamRoleArnCredentialsProvider(
        KEY, role_arn=ROLE, sts_endpoint=sts_server.url, clock=clock
    )


def test_requests_signs_each_request_with_the_current_role_credential(
    clock: Clock, sts: tuple[FakeSts, FakeServer], api: FakeServer
) -> None:
    auth = RequestsAuth(role(clock, sts[1]), action="DescribeRegions", version="2014-05-26")
    with requests.Session() as session:
        session.get(api.url + "/", auth=auth, timeout=5).raise_for_status()
        clock.now += 3600 - 15 * 60
        session.get(api.url + "/", auth=auth, timeout=5).raise_for_status()
    assert signed_with(api, 0) == ("STS.issued1", "issued-token-1")
    assert signed_with(api, 1) == ("STS.issued2", "issued-token-2")


def test_httpx_signs_each_request_with_the_current_role_credential(
    clock: Clock, sts: tuple[FakeSts, FakeServer], api: FakeServer
) -> None:
    auth = HttpxAuth(role(clock, sts[1]), action="DescribeRegions", version="2014-05-26")
    with httpx.Client(auth=auth, timeout=5) as client:
        client.get(api.url + "/").raise_for_status()
        clock.now += 3600 - 15 * 60
        client.get(api.url + "/").raise_for_status()
    assert [signed_with(api, i)[0] for i in (0, 1)] == ["STS.issued1", "STS.issued2"]


def test_the_async_httpx_client_refreshes_in_a_worker_thread(
    clock: Clock, sts: tuple[FakeSts, FakeServer], api: FakeServer
) -> None:
    provider = role(clock, sts[1])
    fetched_on: list[int] = []
    fetch = provider.fetch

    def recording_fetch() -> object:
        fetched_on.append(threading.get_ident())
        return fetch()

    provider.fetch = recording_fetch  # type: ignore[method-assign,assignment]
    auth = HttpxAuth(provider, action="DescribeRegions", version="2014-05-26")

    async def run() -> int:
        async with httpx.AsyncClient(auth=auth, timeout=5) as client:
            (await client.get(api.url + "/")).raise_for_status()
            clock.now += 3600
            (await client.get(api.url + "/")).raise_for_status()
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    # the first fetch ran when the auth built its Signer (construction asks once)
    assert len(fetched_on) == 2
    assert fetched_on[1] != loop_thread
    assert signed_with(api, 1)[0] == "STS.issued2"


# -- aliak sign --profile ----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
                 "ALIBABA_CLOUD_PROFILE", "ALIBABA_CLOUD_CREDENTIALS_FILE", "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def sign(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(
        ["sign", "GET", "https://ecs.cn-hangzhou.aliyuncs.com/?RegionId=cn", "--json", *args]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_sign_profile_uses_the_named_config_json_profile(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".aliyun").mkdir()
    profiles = [
        {
            "name": "default",
            "mode": "AK",
            "access_key_id": "LTAIdefault",
            "access_key_secret": "s1",
        },
        {
            "name": "ops",
            "mode": "StsToken",
            "access_key_id": "STS.ops",
            "access_key_secret": "s2",
            "sts_token": "tok",
        },
    ]
    (home / ".aliyun" / "config.json").write_text(
        json.dumps({"current": "default", "profiles": profiles})
    )
    code, out, err = sign(capsys, "--profile", "ops")
    assert code == 0, err
    headers = dict(json.loads(out)["Headers"])
    assert "Credential=STS.ops," in headers["Authorization"]
    assert headers["x-acs-security-token"] == "tok"
    assert "credential" in err  # the warning that the token printed is a credential


def test_sign_profile_falls_back_to_the_credentials_ini_section(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".alibabacloud").mkdir()
    (home / ".alibabacloud" / "credentials.ini").write_text(
        "[ci]\ntype = access_key\naccess_key_id = LTAIci\naccess_key_secret = s\n"
    )
    code, out, err = sign(capsys, "--profile", "ci")
    assert code == 0, err
    assert "Credential=LTAIci," in dict(json.loads(out)["Headers"])["Authorization"]


def test_sign_profile_that_exists_nowhere_fails_naming_each_file(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = sign(capsys, "--profile", "ghost")
    assert code == 1
    assert out == ""
    assert ".aliyun/config.json: not found" in err
    assert ".alibabacloud/credentials.ini or " in err


def test_sign_profile_absent_from_the_file_names_the_profile(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".aliyun").mkdir()
    (home / ".aliyun" / "config.json").write_text('{"current": "x", "profiles": []}')
    code, _, err = sign(capsys, "--profile", "ghost")
    assert code == 1
    # Under --json the error is one JSON object: its text, decoded, names the profile.
    refused = json.loads(err)
    assert refused["Code"] == "MissingParameter"
    assert 'profiles[name="ghost"]: not found' in refused["Message"] + (refused["Detail"] or "")


def test_a_role_profile_is_read_and_refreshed_through_the_async_chain(
    tmp_path: Path, clock: Clock, sts: tuple[FakeSts, FakeServer]
) -> None:
    from aliak import DefaultCredentialsProvider

    (tmp_path / ".aliyun").mkdir()
    profile = {
        "name": "role", "mode": "RamRoleArn", "access_key_id": KEY.access_key_id,
        "access_key_secret": KEY.secret.reveal(), "ram_role_arn": ROLE,
    }  # fmt: skip
    (tmp_path / ".aliyun" / "config.json").write_text(
        json.dumps({"current": "role", "profiles": [profile]})
    )
    provider = DefaultCredentialsProvider(
        environ={"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"},
        home=tmp_path,
        clock=clock,
        sts_endpoint=sts[1].url,
    )

    async def run() -> tuple[str, str]:
        first = await provider.get_credential_async()
        clock.now += 3600
        second = await provider.get_credential_async()
        return first.access_key_id, second.access_key_id

    assert asyncio.run(run()) == ("STS.issued1", "STS.issued2")
    assert sts[1].seen[0].params["RoleArn"] == ROLE
