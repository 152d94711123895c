"""The official ``alibabacloud-credentials`` library, pointed at ``aliak serve --sts``.

Its RAM-role provider calls STS ``AssumeRole`` over HTTPS only (RPC, HMAC-SHA1, GET), so
the server runs with a self-signed certificate for 127.0.0.1 that the library's process
trusts through ``SSL_CERT_FILE``; the credentials it obtains (directly, and by chaining a
second role on the first) are then used with aliak's signer against the same server, and
accepted as the role sessions they are. Keys reach the library through the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aliak import KeyManager, RamRole, RamUser, SQLiteStore, StsCredential
from aliak.integrations.requests import AliakAuth
from integrations._serving import ServerProcess
from test_serve_tls import Tls, _self_signed

ACCOUNT = "1234567890123456"
LISTENING = r"aliak serve: listening on https://127\.0\.0\.1:(\d+)"

OFFICIAL = """
import json, os, sys
from alibabacloud_credentials.provider import RamRoleArnCredentialsProvider

endpoint, first_arn, second_arn = sys.argv[1:4]
first = RamRoleArnCredentialsProvider(
    access_key_id=os.environ["KEY_ID"],
    access_key_secret=os.environ["KEY_SECRET"],
    role_arn=first_arn,
    role_session_name="official-lib",
    sts_endpoint=endpoint,
)
answers = []
for provider in [first] + ([RamRoleArnCredentialsProvider(
    credentials_provider=first, role_arn=second_arn, role_session_name="chained",
    sts_endpoint=endpoint,
)] if second_arn != "-" else []):
    credentials = provider.get_credentials()
    answers.append({
        "AccessKeyId": credentials.get_access_key_id(),
        "AccessKeySecret": credentials.get_access_key_secret(),
        "SecurityToken": credentials.get_security_token(),
    })
print(json.dumps(answers))
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ServerProcess, Tls, tuple[str, str]]]:
    db = tmp_path / "aliak.db"
    store = SQLiteStore(db)
    try:
        manager = KeyManager(store)
        key = manager.create_access_key(RamUser(ACCOUNT, "ci"))
        manager.create_role(RamRole(ACCOUNT, "Deployer"), trusted=[f"acs:ram::{ACCOUNT}:user/ci"])
        manager.create_role(
            RamRole(ACCOUNT, "Auditor"), trusted=[f"acs:ram::{ACCOUNT}:role/deployer"]
        )
    finally:
        store.close()
    tls = _self_signed(tmp_path)
    process = ServerProcess(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0", "--sts",
         "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
        LISTENING,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        yield process, tls, (key.access_key_id, key.secret.reveal())
        assert process.stop() == 0, process.output
        assert "Traceback" not in process.output, process.output
    finally:
        process.kill()


def official(
    endpoint: str, key: tuple[str, str], tls: Tls, first: str, second: str = "-"
) -> list[dict[str, str]]:
    env = {
        **os.environ,
        "KEY_ID": key[0],
        "KEY_SECRET": key[1],
        "SSL_CERT_FILE": str(tls.cert),
    }
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", OFFICIAL, endpoint, first, second],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers: list[dict[str, str]] = json.loads(done.stdout)
    return answers


def echo(server: ServerProcess, tls: Tls, given: dict[str, str]) -> dict[str, Any]:
    credential = StsCredential(
        given["AccessKeyId"], given["AccessKeySecret"], given["SecurityToken"]
    )
    response = requests.get(
        f"https://127.0.0.1:{server.port}/things",
        auth=AliakAuth(credential, action="DescribeThings", version="2020-01-01"),
        verify=str(tls.cert),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_official_library_obtains_credentials_aliak_accepts(
    setup: tuple[ServerProcess, Tls, tuple[str, str]],
) -> None:
    server, tls, key = setup
    endpoint = f"127.0.0.1:{server.port}"
    direct, chained = official(
        endpoint,
        key,
        tls,
        f"acs:ram::{ACCOUNT}:role/deployer",
        f"acs:ram::{ACCOUNT}:role/auditor",
    )
    assert direct["AccessKeyId"].startswith("STS.")
    principal = echo(server, tls, direct)["Principal"]
    assert (principal["RoleName"], principal["RoleSessionName"]) == ("Deployer", "official-lib")
    principal = echo(server, tls, chained)["Principal"]
    assert (principal["RoleName"], principal["RoleSessionName"]) == ("Auditor", "chained")
    assert key[1] not in server.output


def test_the_official_library_sees_the_sts_refusal(
    setup: tuple[ServerProcess, Tls, tuple[str, str]],
) -> None:
    server, tls, key = setup
    env = {**os.environ, "KEY_ID": key[0], "KEY_SECRET": key[1], "SSL_CERT_FILE": str(tls.cert)}
    done = subprocess.run(
        [sys.executable, "-c", OFFICIAL, f"127.0.0.1:{server.port}",
         f"acs:ram::{ACCOUNT}:role/auditor", "-"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "403" in done.stderr
    assert "NoPermission" in done.stderr
