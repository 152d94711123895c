"""The clients that sign with RPC and ROA (V2), over real sockets, against ``aliak serve``.

``aliyun-python-sdk-core``'s ``AcsClient`` (RPC and ROA, GET and POST, form and JSON
bodies, an STS token) and ``alibabacloud-tea-openapi`` with
``signature_algorithm='v2'`` each call a real ``aliak serve`` subprocess on 127.0.0.1,
which answers with what it verified.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from aliak import KeyManager, RamRole, RamUser, SQLiteStore

OWNER = RamUser("1234567890123456", "legacy-clients")


class Serving:
    """``aliak serve --port 0`` over ``db``; the port read from its first note."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        while True:
            try:
                line = self.lines.get(timeout=20)
            except queue.Empty:
                raise AssertionError("aliak serve did not start: " + "".join(self.stderr)) from None
            if "listening on" in line:
                self.port = int(line.strip().rpartition(":")[2])
                break

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = tmp_path_factory.mktemp("legacy") / "aliak.db"
    store = SQLiteStore(db)
    keys = KeyManager(store)
    key = keys.create_access_key(OWNER).access_key
    sts = keys.assume_role(RamRole("1234567890123456", "deployer"), session_name="ci")
    store.close()
    serving = Serving(db)
    try:
        yield {"key": key, "sts": sts, "endpoint": f"127.0.0.1:{serving.port}", "serving": serving}
    finally:
        serving.close()


def acs_client(world: dict[str, Any], *, sts: bool = False) -> AcsClient:
    if sts:
        credential = world["sts"]
        return AcsClient(
            region_id="cn-hangzhou",
            credential=StsTokenCredential(
                credential.access_key_id,
                credential.secret.reveal(),
                credential.security_token.reveal(),
            ),
            timeout=10,
            connect_timeout=5,
        )
    key = world["key"]
    return AcsClient(
        key.access_key_id, key.secret.reveal(), "cn-hangzhou", timeout=10, connect_timeout=5
    )


def common_request(
    world: dict[str, Any], *, method: str = "GET", uri_pattern: str | None = None
) -> CommonRequest:
    request = CommonRequest(
        domain=world["endpoint"], version="2014-05-26", action_name="DescribeRegions"
    )
    request.set_protocol_type("http")
    request.set_method(method)
    request.set_accept_format("json")
    if uri_pattern is not None:
        request.set_uri_pattern(uri_pattern)
    return request


def answer(client: AcsClient, request: CommonRequest) -> dict[str, Any]:
    body = client.do_action_with_exception(request)
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def test_python_sdk_core_rpc_get(world: dict[str, Any]) -> None:
    request = common_request(world)
    request.add_query_param("RegionId", "cn-hangzhou")
    request.add_query_param("Name", "a b*~&=+/中文")
    verified = answer(acs_client(world), request)
    assert (verified["Scheme"], verified["Algorithm"]) == ("RPC", "HMAC-SHA1")
    assert verified["AccessKeyId"] == world["key"].access_key_id
    assert verified["Action"] == "DescribeRegions"


def test_python_sdk_core_rpc_post_form(world: dict[str, Any]) -> None:
    request = common_request(world, method="POST")
    request.add_body_params("InstanceName", "web 1")
    request.add_body_params("Description", "ünïcode & more")
    verified = answer(acs_client(world), request)
    assert verified["Scheme"] == "RPC"
    assert verified["BodySigned"] is True
    assert verified["BodyLength"] > 0


def test_python_sdk_core_rpc_with_sts_token(world: dict[str, Any]) -> None:
    verified = answer(acs_client(world, sts=True), common_request(world))
    assert (verified["Scheme"], verified["KeyType"]) == ("RPC", "sts")


def test_python_sdk_core_roa_get(world: dict[str, Any]) -> None:
    request = common_request(world, uri_pattern="/clusters/[ClusterId]")
    request.add_path_param("ClusterId", "c-123")
    request.add_query_param("page", "1")
    verified = answer(acs_client(world), request)
    assert (verified["Scheme"], verified["Algorithm"]) == ("ROA", "HMAC-SHA1")
    assert verified["Action"] == "DescribeRegions"


def test_python_sdk_core_roa_post_json(world: dict[str, Any]) -> None:
    request = common_request(world, method="POST", uri_pattern="/clusters")
    body = json.dumps({"name": "k8s", "size": 3}).encode()
    request.set_content(body)
    request.set_content_type("application/json")
    verified = answer(acs_client(world), request)
    assert verified["Scheme"] == "ROA"
    assert verified["BodySigned"] is True  # through Content-MD5
    assert verified["BodyLength"] == len(body)


def test_python_sdk_core_roa_with_sts_token(world: dict[str, Any]) -> None:
    request = common_request(world, uri_pattern="/clusters")
    verified = answer(acs_client(world, sts=True), request)
    assert (verified["Scheme"], verified["KeyType"]) == ("ROA", "sts")


def test_python_sdk_core_sees_the_alibaba_error_for_a_wrong_secret(world: dict[str, Any]) -> None:
    client = AcsClient(world["key"].access_key_id, "not-the-secret", "cn-hangzhou", timeout=10)
    with pytest.raises(ServerException) as caught:
        client.do_action_with_exception(common_request(world))
    assert caught.value.get_error_code() == "SignatureDoesNotMatch"
    assert caught.value.get_http_status() == 400


# -- the Tea SDK with signature_algorithm='v2' ------------------------------------------


def tea_client(world: dict[str, Any]) -> Any:
    from alibabacloud_tea_openapi.client import Client
    from alibabacloud_tea_openapi.utils_models import Config

    key = world["key"]
    return Client(
        Config(
            access_key_id=key.access_key_id,
            access_key_secret=key.secret.reveal(),
            endpoint=world["endpoint"],
            protocol="http",
            signature_algorithm="v2",
            read_timeout=10000,
            connect_timeout=5000,
        )
    )


def tea_call(
    world: dict[str, Any],
    *,
    style: str,
    method: str,
    pathname: str = "/",
    query: dict[str, str] | None = None,
    body: Any = None,
    req_body_type: str = "json",
) -> dict[str, Any]:
    from alibabacloud_tea_openapi.utils_models import OpenApiRequest, Params
    from darabonba.runtime import RuntimeOptions

    params = Params(
        action="DescribeRegions",
        version="2014-05-26",
        protocol="http",
        pathname=pathname,
        method=method,
        auth_type="AK",
        style=style,
        req_body_type=req_body_type,
        body_type="json",
    )
    request = OpenApiRequest(query=query, body=body)
    response: dict[str, Any] = tea_client(world).call_api(params, request, RuntimeOptions())
    body_map: dict[str, Any] = response["body"]
    return body_map


def test_tea_v2_rpc_get_and_post(world: dict[str, Any]) -> None:
    got = tea_call(world, style="RPC", method="GET", query={"RegionId": "cn-hangzhou", "E": ""})
    assert (got["Scheme"], got["Algorithm"]) == ("RPC", "HMAC-SHA1")
    posted = tea_call(
        world, style="RPC", method="POST", query={"RegionId": "cn-hangzhou"},
        body={"Name": "n 1", "Tag": [{"Key": "k", "Value": "v"}]}, req_body_type="formData",
    )  # fmt: skip
    assert (posted["Scheme"], posted["BodySigned"]) == ("RPC", True)


def test_tea_v2_roa_json_and_form(world: dict[str, Any]) -> None:
    posted = tea_call(
        world, style="ROA", method="POST", pathname="/clusters", query={"empty": "", "b": "2"},
        body={"name": "k8s"},
    )  # fmt: skip
    assert posted["Scheme"] == "ROA"
    assert posted["BodySigned"] is False  # Tea sends no Content-MD5: Verified says so
    form = tea_call(
        world, style="ROA", method="POST", pathname="/clusters", body={"name": "k8s"},
        req_body_type="formData",
    )  # fmt: skip
    assert form["Scheme"] == "ROA"


def test_python_sdk_core_roa_with_a_text_plain_body(world: dict[str, Any]) -> None:
    # A Content-Type the client sent is signed as sent, text/plain included (the one
    # wsgiref invents for a request without one is not).
    request = common_request(world, method="PUT", uri_pattern="/notes")
    request.set_content(b"plain words")
    request.set_content_type("text/plain")
    verified = answer(acs_client(world), request)
    assert (verified["Scheme"], verified["BodySigned"]) == ("ROA", True)
