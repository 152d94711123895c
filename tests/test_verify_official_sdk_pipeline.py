"""End to end: requests from the official SDK's full client pipeline, verified by aliak.

``alibabacloud_tea_openapi.client.Client.call_api`` (tea-openapi 0.4.6) builds, signs and
sends a real HTTP request to a capturing server on 127.0.0.1. The capture -- method, raw
request target, header list as received, body bytes -- becomes an :class:`aliak.Request`
the way a server integration builds one, and :class:`aliak.Verifier` and
:class:`aliak.AsyncVerifier` must both accept it (the ``verifier`` fixture runs each test
against both shells).

What the SDK does on the wire (and what makes this more than the signer interop test):

- With ``Config.signature_version`` unset and ``Config.signature_algorithm`` unset or an
  ``ACS3-*`` name, ``call_api`` goes to ``do_request``: ACS3 signing for every ``style``.
- It signs *every* header it sets: ``accept``, ``user-agent``,
  ``x-acs-credentials-provider`` and any caller header, not just ``host``/``x-acs-*``.
- The query goes on the wire with ``urlencode`` (``quote_plus``: space is ``+``, ``*`` is
  ``%2A``) in insertion order, while the signature covers the RFC 3986 form, sorted.
- The ``pathname`` goes on the request line exactly as given (already percent-encoded)
  and is signed as such.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.client import Client as OpenApiClient
from alibabacloud_tea_openapi.utils import Utils
from darabonba.runtime import RuntimeOptions

from aliak import AliakError, KeyManager, MemoryStore, RamUser, Request, Verified
from aliak.encoding import parse_query_string
from conftest import MakeVerifier, ShellVerifier

ACCESS_KEY_ID = "LTAI5tSdkPipelineTest01"
SECRET = "kX9pQ2mV7tR4wZ8yB3nC6hJ1sD5fG0"  # 30 characters, as Alibaba issues them
WRONG_SECRET = "kX9pQ2mV7tR4wZ8yB3nC6hJ1sD5fG1"
OWNER = RamUser("1234567890123456", "sdk-user")
USER_AGENT_SUFFIX = "aliak-pipeline-test/1.0"
STS_TOKEN = "CAIS8gF1q6Ft5B2yfSjIr5bnKdPzhpR1gqG+a0P+sjQ0ffp3ibPOpDz2IHhMf3NpAe0cs/0="

ALGORITHMS = ("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3")
# Headers the SDK sets and signs on every request, besides the ones aliak requires.
SDK_SIGNED_EXTRAS = ("accept", "user-agent", "x-acs-credentials-provider")
REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)

# ---------------------------------------------------------------------------------------
# The capturing server
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """One request exactly as it arrived: nothing decoded, normalised or reordered."""

    method: str
    target: str  # the raw request target: raw path + "?" + raw query, still encoded
    headers: tuple[tuple[str, str], ...]  # as received, duplicates kept, original case
    body: bytes

    @property
    def raw_path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query(self) -> str:
        return self.target.partition("?")[2]

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str:
        values = self.header_values(name)
        assert len(values) == 1, f"{name}: {values!r} in {self!r}"
        return values[0]

    @property
    def authorization(self) -> str:
        return self.header("Authorization")

    @property
    def signed_header_names(self) -> list[str]:
        signed = self.authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
        return signed.split(";")

    def to_request(self) -> Request:
        """Build the aliak request as a server integration does."""
        # http.server decodes the request line as ISO-8859-1; encoding back gives the bytes.
        raw_path, _, raw_query = self.target.encode("iso-8859-1").partition(b"?")
        return Request(
            self.method,
            path=raw_path.decode("ascii") or "/",
            query=parse_query_string(raw_query),
            headers=list(self.headers),
            body=self.body,
        )


class _CaptureHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 answers close the connection: no keep-alive thread outlives a test.
    protocol_version = "HTTP/1.0"
    response_body: ClassVar[bytes] = b'{"RequestId":"X"}'

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailer fields
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _capture(self) -> None:
        captured = Captured(
            method=self.command,
            target=self.path,
            headers=tuple(self.headers.items()),
            body=self._read_body(),
        )
        self.server.captures.append(captured)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.response_body)))
        self.end_headers()
        self.wfile.write(self.response_body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _capture

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _CaptureHandler)
    httpd.daemon_threads = True
    httpd.captures = []  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads proxies and a user-agent suffix from the environment; neither may
    # route a test request off 127.0.0.1 or change what is signed.
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "ALIBABA_CLOUD_USER_AGENT",
        "DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------
# The SDK side
# ---------------------------------------------------------------------------------------


def sdk_client(
    server: ThreadingHTTPServer,
    *,
    secret: str = SECRET,
    algorithm: str | None = None,
    security_token: str | None = None,
) -> OpenApiClient:
    port = server.server_address[1]
    return OpenApiClient(
        open_api_models.Config(
            access_key_id=ACCESS_KEY_ID,
            access_key_secret=secret,
            security_token=security_token,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
            region_id="cn-hangzhou",
            user_agent=USER_AGENT_SUFFIX,
            signature_algorithm=algorithm,  # None -> ACS3-HMAC-SHA256
            connect_timeout=2000,
            read_timeout=2000,
        )
    )


def sdk_params(
    *,
    action: str,
    version: str,
    style: str,
    method: str,
    pathname: str = "/",
    req_body_type: str = "json",
) -> open_api_models.Params:
    return open_api_models.Params(
        action=action,
        version=version,
        protocol="HTTP",
        pathname=pathname,
        method=method,
        auth_type="AK",
        style=style,
        req_body_type=req_body_type,
        body_type="json",
    )


def call(
    server: ThreadingHTTPServer,
    client: OpenApiClient,
    params: open_api_models.Params,
    request: open_api_models.OpenApiRequest,
) -> Captured:
    """Send through ``call_api`` and return the one request the server received."""
    captures: list[Captured] = server.captures  # type: ignore[attr-defined]
    before = len(captures)
    # No retries, short timeouts: a broken exchange fails the test instead of hanging it.
    runtime = RuntimeOptions(
        autoretry=False, max_attempts=0, connect_timeout=2000, read_timeout=2000
    )
    response = client.call_api(params, request, runtime)
    assert response["statusCode"] == 200
    assert response["body"] == {"RequestId": "X"}
    received = captures[before:]
    assert len(received) == 1, received
    return received[0]


# ---------------------------------------------------------------------------------------
# The aliak side
# ---------------------------------------------------------------------------------------


@pytest.fixture
def verifier(make_verifier: MakeVerifier) -> Iterator[ShellVerifier]:
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RAM user's key is imported without a warning
        KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    with make_verifier(store) as verifier:
        yield verifier


def verify(verifier: ShellVerifier, captured: Captured) -> Verified:
    """Verify, and on a refusal show the capture (the string-to-sign is in the error)."""
    try:
        return verifier.verify(captured.to_request(), source_ip="127.0.0.1")
    except AliakError as error:
        pytest.fail(f"aliak refused an SDK request: {error}\ncaptured: {captured!r}")


def assert_verified(
    verified: Verified,
    captured: Captured,
    *,
    action: str,
    version: str,
    algorithm: str,
) -> None:
    assert captured.authorization.startswith(f"{algorithm} Credential={ACCESS_KEY_ID},")
    assert verified.access_key_id == ACCESS_KEY_ID
    assert verified.principal == OWNER
    assert verified.key_type == "permanent"
    assert verified.algorithm == algorithm
    assert verified.action == action
    assert verified.version == version
    assert verified.nonce == captured.header("x-acs-signature-nonce")
    assert verified.source_ip == "127.0.0.1"
    # The SDK signs everything it sends; aliak reports exactly what was signed.
    assert list(verified.signed_headers) == captured.signed_header_names
    for name in (*REQUIRED_SIGNED, *SDK_SIGNED_EXTRAS):
        assert name in verified.signed_headers
    assert captured.header("x-acs-credentials-provider") == "static_ak"
    assert captured.header("user-agent").endswith(" " + USER_AGENT_SUFFIX)
    assert verified.body == captured.body


# ---------------------------------------------------------------------------------------
# Accepted requests
# ---------------------------------------------------------------------------------------

# Names in insertion order, deliberately not sorted; values with every character whose
# encoding differs between the wire (quote_plus) and the signature (RFC 3986).
RPC_QUERY: dict[str, str] = {
    "Zeta": "a b*c~d+e/f é 中文",
    "RegionId": "cn-hangzhou",
    "Alpha": "!'()=&%?#",
    "Empty": "",
    # Nested parameters, flattened the way generated SDK clients do (Tag.1.Key, ...).
    **Utils.query(
        {
            "Tag": [{"Key": "env", "Value": "pro d"}, {"Key": "k/2", "Value": "v+2"}],
            "Filter": {"Name": "x*y", "Values": ["1 2", "ü"]},
        }
    ),
    # A JSON-style array parameter, as the SDK serialises one.
    "InstanceIds": Utils.array_to_string_with_specified_style(
        ["i-1", "i 2"], "InstanceIds", "json"
    ),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rpc_post_with_quote_plus_encoded_unsorted_query_is_accepted(
    server: ThreadingHTTPServer, verifier: ShellVerifier, algorithm: str
) -> None:
    client = sdk_client(server, algorithm=algorithm)
    params = sdk_params(
        action="DescribeInstances", version="2014-05-26", style="RPC", method="POST"
    )
    captured = call(server, client, params, open_api_models.OpenApiRequest(query=dict(RPC_QUERY)))

    # The wire form really is quote_plus, in insertion order.
    assert captured.method == "POST"
    assert captured.raw_path == "/"
    wire = captured.raw_query
    assert "Zeta=a+b%2Ac~d%2Be%2Ff+%C3%A9+%E4%B8%AD%E6%96%87" in wire
    assert "Alpha=%21%27%28%29%3D%26%25%3F%23" in wire
    assert "Tag.1.Value=pro+d" in wire
    wire_names = [piece.partition("=")[0] for piece in wire.split("&")]
    assert wire_names == list(RPC_QUERY)
    assert wire_names != sorted(wire_names)
    assert "Filter.Values.2" in RPC_QUERY
    assert RPC_QUERY["InstanceIds"] == '["i-1","i 2"]'
    # A server decoding the query with "+" as space gets back exactly what the SDK signed.
    assert dict(parse_query_string(wire.encode("ascii"))) == RPC_QUERY
    assert captured.body == b""
    if algorithm == "ACS3-HMAC-SHA256":
        assert captured.header("x-acs-content-sha256") == hashlib.sha256(b"").hexdigest()

    verified = verify(verifier, captured)
    assert_verified(
        verified, captured, action="DescribeInstances", version="2014-05-26", algorithm=algorithm
    )


ROA_PATHNAME = "/clusters/c-82e6%2Fb%209/attach"
ROA_BODY: dict[str, Any] = {
    "nodepool_id": "np-1",
    "description": "节点 pool * ~ + / é",
    "tags": [{"key": "env", "value": "prod"}],
    "count": 3,
    "keep": True,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_roa_post_with_encoded_slash_and_space_in_path_and_json_body_is_accepted(
    server: ThreadingHTTPServer, verifier: ShellVerifier, algorithm: str
) -> None:
    client = sdk_client(server, algorithm=algorithm)
    params = sdk_params(
        action="AttachInstances",
        version="2015-12-15",
        style="ROA",
        method="POST",
        pathname=ROA_PATHNAME,
    )
    # Query names stay unreserved: the SDK signs names unencoded (spec §10.2).
    request = open_api_models.OpenApiRequest(query={"force": "true", "retry": "0"}, body=ROA_BODY)
    captured = call(server, client, params, request)

    assert captured.method == "POST"
    assert captured.raw_path == ROA_PATHNAME  # sent verbatim: %2F and %20 stay encoded
    assert captured.raw_query == "force=true&retry=0"
    assert captured.header("content-type") == "application/json; charset=utf-8"
    assert "content-type" in captured.signed_header_names
    assert json.loads(captured.body) == ROA_BODY
    assert "节点".encode() in captured.body  # ensure_ascii=False: raw UTF-8 on the wire

    verified = verify(verifier, captured)
    assert_verified(
        verified, captured, action="AttachInstances", version="2015-12-15", algorithm=algorithm
    )
    assert "content-type" in verified.signed_headers


def test_get_without_body_and_with_a_caller_header_is_accepted(
    server: ThreadingHTTPServer, verifier: ShellVerifier
) -> None:
    client = sdk_client(server)
    params = sdk_params(
        action="DescribeRegions", version="2014-05-26", style="RPC", method="GET", pathname="/"
    )
    request = open_api_models.OpenApiRequest(
        query={"PageSize": "10", "InstanceName": "web 01"},
        headers={"X-Trace-Tag": "inner  spaces kept"},
    )
    captured = call(server, client, params, request)

    assert captured.method == "GET"
    assert captured.body == b""
    assert captured.header_values("content-type") == []
    assert captured.header("x-acs-content-sha256") == hashlib.sha256(b"").hexdigest()
    assert captured.raw_query == "PageSize=10&InstanceName=web+01"

    verified = verify(verifier, captured)
    assert_verified(
        verified,
        captured,
        action="DescribeRegions",
        version="2014-05-26",
        algorithm="ACS3-HMAC-SHA256",
    )
    assert "x-trace-tag" in verified.signed_headers


def test_form_body_is_accepted(server: ThreadingHTTPServer, verifier: ShellVerifier) -> None:
    client = sdk_client(server)
    params = sdk_params(
        action="CreateSecurityGroup",
        version="2014-05-26",
        style="RPC",
        method="POST",
        req_body_type="formData",
    )
    body = {
        "SecurityGroupName": "web servers",
        "Description": "ü * ~ + /",
        "Tag": [{"Key": "env", "Value": "prod"}],
    }
    captured = call(
        server,
        client,
        params,
        open_api_models.OpenApiRequest(query={"RegionId": "cn-hangzhou"}, body=body),
    )

    assert captured.header("content-type") == "application/x-www-form-urlencoded"
    assert dict(parse_query_string(captured.body)) == {
        "Description": "ü * ~ + /",
        "SecurityGroupName": "web servers",
        "Tag.1.Key": "env",
        "Tag.1.Value": "prod",
    }

    verified = verify(verifier, captured)
    assert_verified(
        verified,
        captured,
        action="CreateSecurityGroup",
        version="2014-05-26",
        algorithm="ACS3-HMAC-SHA256",
    )
    assert "content-type" in verified.signed_headers


def test_binary_stream_body_is_accepted(
    server: ThreadingHTTPServer, verifier: ShellVerifier
) -> None:
    client = sdk_client(server)
    params = sdk_params(
        action="PutObjectLike",
        version="2020-01-01",
        style="ROA",
        method="PUT",
        pathname="/objects/report%20v1.bin",
        req_body_type="binary",
    )
    payload = bytes(range(256)) * 4
    captured = call(
        server, client, params, open_api_models.OpenApiRequest(stream=io.BytesIO(payload))
    )

    assert captured.method == "PUT"
    assert captured.body == payload
    assert captured.header("content-type") == "application/octet-stream"

    verified = verify(verifier, captured)
    assert_verified(
        verified,
        captured,
        action="PutObjectLike",
        version="2020-01-01",
        algorithm="ACS3-HMAC-SHA256",
    )


# ---------------------------------------------------------------------------------------
# Refused requests
# ---------------------------------------------------------------------------------------


def test_wrong_secret_in_the_sdk_config_is_refused_with_signature_does_not_match(
    server: ThreadingHTTPServer, verifier: ShellVerifier
) -> None:
    client = sdk_client(server, secret=WRONG_SECRET)
    params = sdk_params(
        action="DescribeInstances", version="2014-05-26", style="RPC", method="POST"
    )
    captured = call(server, client, params, open_api_models.OpenApiRequest(query=dict(RPC_QUERY)))

    with pytest.raises(AliakError) as refused:
        verifier.verify(captured.to_request(), source_ip="127.0.0.1")
    assert refused.value.code == "SignatureDoesNotMatch"
    assert refused.value.http_status == 400
    # The echoed string-to-sign is public data only.
    assert "ACS3-HMAC-SHA256\n" in refused.value.message
    assert WRONG_SECRET not in str(refused.value)
    assert SECRET not in str(refused.value)


def test_replayed_capture_is_refused_with_signature_nonce_used(
    server: ThreadingHTTPServer, verifier: ShellVerifier
) -> None:
    client = sdk_client(server)
    params = sdk_params(
        action="DescribeInstances", version="2014-05-26", style="RPC", method="POST"
    )
    captured = call(server, client, params, open_api_models.OpenApiRequest(query=dict(RPC_QUERY)))

    verify(verifier, captured)
    with pytest.raises(AliakError) as refused:
        verifier.verify(captured.to_request(), source_ip="127.0.0.1")
    assert refused.value.code == "SignatureNonceUsed"


def _tamper_query(captured: Captured) -> Captured:
    return _with_target(captured, captured.target.replace("Zeta=a+b", "Zeta=a+c", 1))


def _tamper_path(captured: Captured) -> Captured:
    return _with_target(captured, captured.target.replace("%2F", "/", 1))


def _tamper_body(captured: Captured) -> Captured:
    return Captured(captured.method, captured.target, captured.headers, captured.body + b" ")


def _tamper_user_agent(captured: Captured) -> Captured:
    headers = tuple(
        (name, value + "x" if name.lower() == "user-agent" else value)
        for name, value in captured.headers
    )
    return Captured(captured.method, captured.target, headers, captured.body)


def _with_target(captured: Captured, target: str) -> Captured:
    assert target != captured.target
    return Captured(captured.method, target, captured.headers, captured.body)


@pytest.mark.parametrize("tamper", [_tamper_query, _tamper_path, _tamper_body, _tamper_user_agent])
def test_a_changed_byte_anywhere_signed_is_refused_with_signature_does_not_match(
    server: ThreadingHTTPServer, verifier: ShellVerifier, tamper: Any
) -> None:
    # A negative control: the accepted cases above pass because aliak checks what the
    # SDK signed (query as decoded, raw path, body, every signed header), not by luck.
    client = sdk_client(server)
    params = sdk_params(
        action="AttachInstances",
        version="2015-12-15",
        style="ROA",
        method="POST",
        pathname=ROA_PATHNAME,
    )
    request = open_api_models.OpenApiRequest(query={"Zeta": "a b"}, body=ROA_BODY)
    captured = call(server, client, params, request)

    with pytest.raises(AliakError) as refused:
        verifier.verify(tamper(captured).to_request(), source_ip="127.0.0.1")
    assert refused.value.code == "SignatureDoesNotMatch"
    verify(verifier, captured)  # the untouched capture still passes (nonce not consumed)


# ---------------------------------------------------------------------------------------
# STS: captured and inspected only (aliak's STS verification comes later)
# ---------------------------------------------------------------------------------------


def test_sts_request_sends_and_signs_the_token_and_key_id_headers(
    server: ThreadingHTTPServer,
) -> None:
    client = sdk_client(server, security_token=STS_TOKEN)
    params = sdk_params(
        action="DescribeInstances", version="2014-05-26", style="RPC", method="POST"
    )
    captured = call(server, client, params, open_api_models.OpenApiRequest(query={"RegionId": "x"}))

    assert captured.header("x-acs-security-token") == STS_TOKEN
    assert captured.header("x-acs-accesskey-id") == ACCESS_KEY_ID
    assert captured.header("x-acs-credentials-provider") == "static_sts"
    signed = captured.signed_header_names
    assert "x-acs-security-token" in signed
    assert "x-acs-accesskey-id" in signed
    assert captured.authorization.startswith(f"ACS3-HMAC-SHA256 Credential={ACCESS_KEY_ID},")
    # The capture still makes a well-formed aliak request (no verification here).
    assert captured.to_request().headers["x-acs-security-token"] == STS_TOKEN
