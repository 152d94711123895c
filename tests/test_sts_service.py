"""STS ``AssumeRole`` answered by aliak (``aliak.integrations.sts``), over real sockets.

A verifying WSGI server on 127.0.0.1 (the middleware, then :class:`AssumeRoleApp`, then
an echo of the verified principal) is called by aliak's own RAM-role provider, by
``aliyun-python-sdk-core`` (RPC, HMAC-SHA1) and by the official Tea client (ACS3); the
credentials it issues are then used against the same server. And what an attacker
would try: root keys, untrusted principals, other accounts, parameters given twice or
hidden in an unsigned body, a session policy, out-of-range durations, a wrong external id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from aliak import (
    AccessKey,
    Account,
    AssumedRole,
    KeyManager,
    RamRole,
    RamRoleArnCredentialsProvider,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
    StsCredential,
    Verified,
    Verifier,
)
from aliak.cli._sign import wire_url
from aliak.encoding import percent_encode
from aliak.integrations.sts import AssumeRoleApp
from aliak.integrations.wsgi import AliakWSGIMiddleware

ACCOUNT = "1234567890123456"
OTHER = "6543210987654321"
ROLE_ARN = f"acs:ram::{ACCOUNT}:role/deployer"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["REQUEST_URI"] = self.path
        if self.headers.get("Content-Type") is None:
            environ.pop("CONTENT_TYPE", None)
        return environ


def _echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    verified = environ["aliak.verified"]
    assert isinstance(verified, Verified)
    payload = json.dumps(verified.to_dict()).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


@dataclass
class World:
    url: str
    manager: KeyManager
    ci: AccessKey  # a RAM user the role trusts
    stranger: AccessKey  # a RAM user of the same account it does not trust
    outsider: AccessKey  # a RAM user of another account
    root: AccessKey  # the account's own key


def _key(manager: KeyManager, owner: Account | RamUser) -> AccessKey:
    if isinstance(owner, Account):
        manager.set_root_keys_allowed(True)
        with pytest.warns(UserWarning, match="root"):
            return manager.create_access_key(owner).access_key
    return manager.create_access_key(owner).access_key


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = SQLiteStore(tmp_path / "aliak.db")
    manager = KeyManager(store)
    keys = {
        "ci": _key(manager, RamUser(ACCOUNT, "ci")),
        "stranger": _key(manager, RamUser(ACCOUNT, "stranger")),
        "outsider": _key(manager, RamUser(OTHER, "ci")),
        "root": _key(manager, Account(ACCOUNT)),
    }
    manager.create_role(RamRole(ACCOUNT, "Deployer"), trusted=[f"acs:ram::{ACCOUNT}:user/CI"])
    verifier = Verifier(store)
    app = AliakWSGIMiddleware(AssumeRoleApp(manager, _echo), verifier)
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield World(f"http://127.0.0.1:{server.server_port}", manager, **keys)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        verifier.close()
        store.close()


def call(
    world: World, signer: Signer, query: dict[str, str] | list[tuple[str, str]], **kw: Any
) -> tuple[int, dict[str, Any]]:
    """An RPC call signed by ``signer``; (status, JSON answer)."""
    host = world.url.removeprefix("http://")
    request = Request("GET", host=host, path="/", query=query, **kw)
    signed = signer.sign(request, action="AssumeRole", version="2015-04-01")
    return send(wire_url(world.url, signed), signed)


def send(url: str, signed: Request) -> tuple[int, dict[str, Any]]:
    body = signed.body if isinstance(signed.body, bytes) else None
    outgoing = urllib.request.Request(
        url, data=body or None, method=signed.method, headers=dict(signed.headers.items())
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def rpc(credential: AccessKey | StsCredential) -> Signer:
    return Signer(credential, scheme="RPC")


def assume(
    world: World, credential: AccessKey | StsCredential, **params: str
) -> tuple[int, dict[str, Any]]:
    query = {"RoleArn": ROLE_ARN, "RoleSessionName": "deploy-1", **params}
    return call(world, rpc(credential), query)


def use(world: World, answer: dict[str, Any]) -> dict[str, Any]:
    """Call the echo with the issued credential; the verified request's JSON."""
    given = answer["Credentials"]
    credential = StsCredential(
        given["AccessKeyId"], given["AccessKeySecret"], given["SecurityToken"]
    )
    host = world.url.removeprefix("http://")
    signed = Signer(credential).sign(
        Request("GET", host=host, path="/echo"), action="DescribeThings", version="2020-01-01"
    )
    status, echoed = send(wire_url(world.url, signed), signed)
    assert status == 200, echoed
    return echoed


# -- what a caller gets -----------------------------------------------------------------


def test_a_trusted_user_gets_credentials_in_the_official_shape(world: World) -> None:
    status, answer = assume(world, world.ci, DurationSeconds="1800")
    assert status == 200, answer
    assert set(answer) == {"RequestId", "AssumedRoleUser", "Credentials"}
    record = world.manager.get_role(ACCOUNT, "deployer")
    assert answer["AssumedRoleUser"] == {
        "Arn": AssumedRole(record.role, "deploy-1").arn,
        "AssumedRoleId": f"{record.role_id}:deploy-1",
    }
    credentials = answer["Credentials"]
    assert set(credentials) == {"SecurityToken", "AccessKeyId", "AccessKeySecret", "Expiration"}
    assert credentials["AccessKeyId"].startswith("STS.")
    assert credentials["Expiration"].endswith("Z")
    echoed = use(world, answer)
    assert echoed["KeyType"] == "sts"
    assert echoed["Principal"]["RoleName"] == "Deployer"
    assert echoed["Principal"]["RoleSessionName"] == "deploy-1"


def test_the_audit_trail_names_the_caller(world: World) -> None:
    status, answer = assume(world, world.ci)
    assert status == 200
    events = [e for e in world.manager.audit_events() if e.action == "AssumeRole"]
    assert len(events) == 1
    assert events[0].actor == f"acs:ram::{ACCOUNT}:user/ci"
    assert events[0].access_key_id == answer["Credentials"]["AccessKeyId"]
    assert world.ci.access_key_id in events[0].detail
    assert answer["Credentials"]["AccessKeySecret"] not in repr(events)


def test_aliaks_own_ram_role_provider_obtains_and_uses_them(world: World) -> None:
    provider = RamRoleArnCredentialsProvider(
        world.ci, role_arn=ROLE_ARN, role_session_name="from-provider", sts_endpoint=world.url
    )
    credential = provider.get_credential()
    assert isinstance(credential, StsCredential)
    host = world.url.removeprefix("http://")
    signed = Signer(provider).sign(
        Request("GET", host=host, path="/echo"), action="DescribeThings", version="2020-01-01"
    )
    status, echoed = send(wire_url(world.url, signed), signed)
    assert status == 200, echoed
    assert echoed["Principal"]["RoleSessionName"] == "from-provider"


def test_a_role_session_may_assume_a_role_that_trusts_its_role(world: World) -> None:
    world.manager.create_role(
        RamRole(ACCOUNT, "Auditor"), trusted=[f"acs:ram::{ACCOUNT}:role/deployer"]
    )
    first = RamRoleArnCredentialsProvider(world.ci, role_arn=ROLE_ARN, sts_endpoint=world.url)
    chained = RamRoleArnCredentialsProvider(
        first, role_arn=f"acs:ram::{ACCOUNT}:role/auditor", sts_endpoint=world.url
    )
    credential = chained.get_credential()
    assert isinstance(credential, StsCredential)
    # The user itself is not trusted by Auditor.
    status, answer = call(world, rpc(world.ci), {
        "RoleArn": f"acs:ram::{ACCOUNT}:role/auditor", "RoleSessionName": "direct",
    })  # fmt: skip
    assert (status, answer["Code"]) == (403, "NoPermission")


def test_a_chained_session_gets_an_hour_at_most(world: World) -> None:
    world.manager.update_role(ACCOUNT, "deployer", max_session_duration=7200, trusted=[
        f"acs:ram::{ACCOUNT}:user/ci", f"acs:ram::{ACCOUNT}:role/deployer",
    ])  # fmt: skip
    status, answer = assume(world, world.ci, DurationSeconds="7200")
    assert status == 200, answer
    given = answer["Credentials"]
    session = StsCredential(given["AccessKeyId"], given["AccessKeySecret"], given["SecurityToken"])
    status, refused = assume(world, session, DurationSeconds="3601")
    assert (status, refused["Code"]) == (400, "InvalidParameter.DurationSeconds")
    status, answer = assume(world, session, DurationSeconds="3600")
    assert status == 200, answer


# -- refusals -----------------------------------------------------------------------------


def test_root_keys_may_not_assume_roles_even_when_trusted(world: World) -> None:
    world.manager.update_role(ACCOUNT, "deployer", trusted=[f"acs:ram::{ACCOUNT}:root"])
    status, answer = assume(world, world.root)
    assert (status, answer["Code"]) == (403, "NoPermission")
    assert answer["Message"] == "Roles may not be assumed by root accounts."
    # ... while every RAM user of the account now may.
    assert assume(world, world.stranger)[0] == 200


@pytest.mark.parametrize("who", ["stranger", "outsider"])
def test_principals_the_role_does_not_trust_are_refused(world: World, who: str) -> None:
    status, answer = assume(world, getattr(world, who))
    assert (status, answer["Code"]) == (403, "NoPermission")
    assert "Credentials" not in answer


def test_trusting_an_account_does_not_trust_another(world: World) -> None:
    world.manager.update_role(ACCOUNT, "deployer", trusted=[f"acs:ram::{ACCOUNT}:root"])
    assert assume(world, world.outsider)[1]["Code"] == "NoPermission"


@pytest.mark.parametrize(
    "arn",
    [
        f"acs:ram::{ACCOUNT}:role/nosuchrole",
        f"acs:ram::{OTHER}:role/deployer",  # the same name in another account
    ],
)
def test_a_role_that_does_not_exist_is_entity_not_exist(world: World, arn: str) -> None:
    status, answer = assume(world, world.ci, RoleArn=arn)
    assert (status, answer["Code"]) == (404, "EntityNotExist.Role")


@pytest.mark.parametrize(
    "arn",
    [
        "deployer",
        f"acs:ram:{ACCOUNT}:role/deployer",
        f"acs:ram::{ACCOUNT}:role/",
        f"acs:ram::{ACCOUNT}:user/deployer",
        f" acs:ram::{ACCOUNT}:role/deployer",
        f"acs:ram::{ACCOUNT}:role/deployer ",
        f"acs:ram::{ACCOUNT}:role/deployer/x",
        f"acs:sts::{ACCOUNT}:role/deployer",
        f"acs:ram::{ACCOUNT}:role/deployer\n",
    ],
)
def test_a_malformed_role_arn_is_refused(world: World, arn: str) -> None:
    status, answer = assume(world, world.ci, RoleArn=arn)
    assert (status, answer["Code"]) == (400, "InvalidParameter.RoleArn")


def test_the_role_name_in_the_arn_is_case_insensitive(world: World) -> None:
    assert assume(world, world.ci, RoleArn=f"acs:ram::{ACCOUNT}:role/DEPLOYER")[0] == 200


@pytest.mark.parametrize(
    "duration", ["899", "3601", "0", "+900", " 900", "9_00", "1e3", "-1", "99999999"]
)
def test_durations_outside_the_role_limit_are_refused(world: World, duration: str) -> None:
    status, answer = assume(world, world.ci, DurationSeconds=duration)
    assert (status, answer["Code"]) == (400, "InvalidParameter.DurationSeconds")


@pytest.mark.parametrize("duration", ["900", "3600"])
def test_durations_at_the_limits_are_accepted(world: World, duration: str) -> None:
    assert assume(world, world.ci, DurationSeconds=duration)[0] == 200


@pytest.mark.parametrize("session", ["a", "x" * 65, "bad name", "é-accent", "semi;colon"])
def test_a_malformed_session_name_is_refused(world: World, session: str) -> None:
    status, answer = assume(world, world.ci, RoleSessionName=session)
    assert (status, answer["Code"]) == (400, "InvalidParameter.RoleSessionName")


@pytest.mark.parametrize("missing", ["RoleArn", "RoleSessionName"])
def test_a_missing_parameter_is_named(world: World, missing: str) -> None:
    query = {"RoleArn": ROLE_ARN, "RoleSessionName": "s1"}
    del query[missing]
    status, answer = call(world, rpc(world.ci), query)
    assert (status, answer["Code"]) == (400, "MissingParameter")
    assert missing in answer["Message"]


def test_a_session_policy_is_refused_rather_than_ignored(world: World) -> None:
    status, answer = assume(world, world.ci, Policy='{"Version":"1","Statement":[]}')
    assert (status, answer["Code"]) == (400, "InvalidParameter")
    assert "Policy" in answer["Message"]


def _rpc_signed_by_hand(world: World, pairs: list[tuple[str, str]]) -> str:
    """An RPC GET URL signed here (aliak's signer refuses a repeated name)."""
    key = world.ci
    pairs = [
        *pairs,
        ("AccessKeyId", key.access_key_id),
        ("Action", "AssumeRole"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", uuid.uuid4().hex),
        ("SignatureVersion", "1.0"),
        ("Timestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        ("Version", "2015-04-01"),
    ]
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(pairs))
    to_sign = "GET&%2F&" + percent_encode(canonical)
    digest = hmac.new(f"{key.secret.reveal()}&".encode(), to_sign.encode(), hashlib.sha1)
    signature = base64.b64encode(digest.digest()).decode()
    return f"{world.url}/?{canonical}&Signature={percent_encode(signature)}"


def test_a_hand_signed_call_is_answered(world: World) -> None:
    # The control for the test below: the hand-made signature is right.
    url = _rpc_signed_by_hand(world, [("RoleArn", ROLE_ARN), ("RoleSessionName", "s1")])
    status, answer = send(url, Request("GET", host="127.0.0.1"))
    assert status == 200, answer


def test_a_parameter_given_twice_is_refused(world: World) -> None:
    # Both values are signed: the server must not pick one silently.
    url = _rpc_signed_by_hand(world, [
        ("RoleArn", f"acs:ram::{ACCOUNT}:role/nosuchrole"),
        ("RoleArn", ROLE_ARN),
        ("RoleSessionName", "s1"),
    ])  # fmt: skip
    status, answer = send(url, Request("GET", host="127.0.0.1"))
    assert (status, answer["Code"]) == (400, "InvalidParameter"), answer
    assert "RoleArn" in answer["Message"]


def test_parameters_in_an_unsigned_body_are_not_read(world: World) -> None:
    # An RPC signature does not cover a body that is not a form: its bytes must not count.
    host = world.url.removeprefix("http://")
    request = Request(
        "POST",
        host=host,
        path="/",
        query={"RoleSessionName": "s1"},
        headers={"Content-Type": "text/plain"},
        body=f"RoleArn={ROLE_ARN}".encode(),
    )
    signed = rpc(world.ci).sign(request, action="AssumeRole", version="2015-04-01")
    status, answer = send(wire_url(world.url, signed), signed)
    assert (status, answer["Code"]) == (400, "MissingParameter")


def test_parameters_in_a_signed_form_body_are_read(world: World) -> None:
    host = world.url.removeprefix("http://")
    request = Request(
        "POST",
        host=host,
        path="/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=f"RoleArn={ROLE_ARN}&RoleSessionName=form-1".encode(),
    )
    signed = rpc(world.ci).sign(request, action="AssumeRole", version="2015-04-01")
    status, answer = send(wire_url(world.url, signed), signed)
    assert status == 200, answer
    assert answer["AssumedRoleUser"]["AssumedRoleId"].endswith(":form-1")


def test_a_tampered_role_arn_fails_the_signature(world: World) -> None:
    host = world.url.removeprefix("http://")
    request = Request("GET", host=host, path="/", query={
        "RoleArn": f"acs:ram::{ACCOUNT}:role/other", "RoleSessionName": "s1",
    })  # fmt: skip
    signed = rpc(world.ci).sign(request, action="AssumeRole", version="2015-04-01")
    url = wire_url(world.url, signed).replace("role%2Fother", "role%2Fdeployer")
    assert "role%2Fdeployer" in url
    status, answer = send(url, signed)
    assert (status, answer["Code"]) == (400, "SignatureDoesNotMatch")


def test_an_external_id_the_trust_requires_must_match(world: World) -> None:
    world.manager.update_role(ACCOUNT, "deployer", external_id="ext-7f3a")
    assert assume(world, world.ci)[1]["Code"] == "NoPermission"
    assert assume(world, world.ci, ExternalId="ext-7f3b")[1]["Code"] == "NoPermission"
    assert assume(world, world.ci, ExternalId="ext-7f3a")[0] == 200


def test_other_actions_and_paths_pass_to_the_application(world: World) -> None:
    host = world.url.removeprefix("http://")
    signed = rpc(world.ci).sign(
        Request("GET", host=host, path="/", query={"RoleArn": ROLE_ARN}),
        action="AssumeRole",
        version="2099-01-01",
    )
    status, echoed = send(wire_url(world.url, signed), signed)
    assert status == 200
    assert "Credentials" not in echoed
    assert echoed["Action"] == "AssumeRole"


def test_a_deleted_role_can_no_longer_be_assumed(world: World) -> None:
    world.manager.delete_role(ACCOUNT, "Deployer")
    assert assume(world, world.ci)[1]["Code"] == "EntityNotExist.Role"


# -- the official clients -----------------------------------------------------------------


def test_aliyun_python_sdk_core_calls_assume_role(world: World) -> None:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(world.ci.access_key_id, world.ci.secret.reveal(), "cn-hangzhou")
    request = CommonRequest(
        domain=world.url.removeprefix("http://"),
        version="2015-04-01",
        action_name="AssumeRole",
    )
    request.set_protocol_type("http")
    request.set_method("POST")
    request.add_query_param("RoleArn", ROLE_ARN)
    request.add_query_param("RoleSessionName", "sdk-core")
    answer = json.loads(client.do_action_with_exception(request))
    assert answer["AssumedRoleUser"]["AssumedRoleId"].endswith(":sdk-core")
    assert use(world, answer)["Principal"]["RoleSessionName"] == "sdk-core"


def test_the_official_tea_client_calls_assume_role_with_acs3(world: World) -> None:
    from alibabacloud_tea_openapi import models as open_api_models
    from alibabacloud_tea_openapi.client import Client
    from alibabacloud_tea_util import models as util_models

    config = open_api_models.Config(
        access_key_id=world.ci.access_key_id,
        access_key_secret=world.ci.secret.reveal(),
        endpoint=world.url.removeprefix("http://"),
        protocol="HTTP",
    )
    params = open_api_models.Params(
        action="AssumeRole",
        version="2015-04-01",
        protocol="HTTP",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    request = open_api_models.OpenApiRequest(
        query={"RoleArn": ROLE_ARN, "RoleSessionName": "tea-acs3"}
    )
    response = Client(config).call_api(params, request, util_models.RuntimeOptions())
    answer = response["body"]
    assert answer["AssumedRoleUser"]["AssumedRoleId"].endswith(":tea-acs3")
    assert use(world, answer)["Principal"]["RoleSessionName"] == "tea-acs3"
