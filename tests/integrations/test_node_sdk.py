"""The official Alibaba Cloud Node SDK (``@alicloud/openapi-client``, pinned in
``tests/node/package.json``) calling ``aliak serve``: an independent V3 signer, and the
client that sends every body chunked (issue #11, item 6: its POSTs hung).

``tests/node/call.js`` makes two ``callApi`` calls, ``ACS3-HMAC-SHA256`` over plain HTTP:
an RPC-style GET with query parameters and a ROA-style POST with a JSON body
(``reqBodyType: json``), and reports both answers and how node framed each body.

Skipped, with the reason shown, where ``node`` or ``tests/node/node_modules`` is missing
(``npm ci --prefix tests/node`` installs it); under CI (``CI`` set) either is a failure:
CI installs both, and a skip there would hide a broken client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aliak import RamUser

from ._serving import SOCKET_TIMEOUT, aliak_serve, sqlite_store_with_key

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SDK = NODE_DIR / "node_modules" / "@alicloud" / "openapi-client" / "package.json"
OWNER = RamUser(account_id="1234567890123456", name="node")
QUERY = {"RegionId": "cn-hangzhou", "Tag.1.Key": "env", "Filter": "a b/c*~"}
BODY = {"Name": "widget", "Sizes": [1, 2, 3], "Note": "名前 " * 20, "Nested": {"On": True}}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def _node() -> str:
    """The node binary, with the SDK installed beside call.js; or skip (fail under CI)."""
    node = shutil.which("node")
    if node is None:
        missing = "node is not installed: the official Node SDK is not tried"
    elif not SDK.is_file():
        missing = (
            f"{SDK.parent.relative_to(NODE_DIR.parent.parent)} is missing: run "
            "`npm ci --prefix tests/node --no-audit --no-fund` to try the official Node SDK"
        )
    else:
        return node
    if _in_ci():
        pytest.fail(f"under CI: {missing}")
    pytest.skip(missing)


def test_the_official_node_sdk_get_and_chunked_json_post_are_verified_by_serve(
    tmp_path: Path,
) -> None:
    node = _node()
    db = tmp_path / "aliak.db"
    access_key_id, secret = sqlite_store_with_key(db, OWNER)
    with aliak_serve(db) as server:
        call = {
            "endpoint": f"127.0.0.1:{server.port}",
            "accessKeyId": access_key_id,
            "accessKeySecret": secret,
            "query": QUERY,
            "body": BODY,
        }
        result = subprocess.run(
            [node, str(NODE_DIR / "call.js")],
            input=json.dumps(call),
            capture_output=True,
            text=True,
            cwd=NODE_DIR,
            timeout=SOCKET_TIMEOUT * 6,  # two calls of 10 s read timeouts each, and start-up
            check=False,
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    get, post = out["rpcGet"], out["roaPost"]
    assert "error" not in get, (get, server.output)
    assert get["statusCode"] == 200
    assert get["body"]["AccessKeyId"] == access_key_id
    assert get["body"]["Principal"] == {"AccountId": OWNER.account_id, "UserName": OWNER.name}
    assert (get["body"]["Action"], get["body"]["BodyLength"]) == ("DescribeThings", 0)

    assert "error" not in post, (post, server.output)
    assert post["statusCode"] == 200
    assert post["body"]["AccessKeyId"] == access_key_id
    assert post["body"]["Action"] == "CreateThing"
    sent_body = out["postBody"].encode("utf-8")
    assert sent_body == json.dumps(BODY, ensure_ascii=False, separators=(",", ":")).encode()
    assert post["body"]["BodyLength"] == len(sent_body)
    assert "content-length" not in post["body"]["SignedHeaders"]

    # What made this a test of chunked bodies: node sent the POST's body chunked.
    framing = {request["method"]: request for request in out["sent"]}
    assert framing["POST"]["chunked"] is True, out["sent"]
    assert framing["POST"]["contentLength"] is None, out["sent"]
    assert framing["POST"]["path"] == "/things"
