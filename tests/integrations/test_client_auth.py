"""The requests and httpx auth classes, end to end over real HTTP on 127.0.0.1.

A stdlib server rebuilds each request from what arrived on the socket, exactly as a server
must (the raw request target, the raw query, every header as received, the body by
Content-Length or by chunked decoding), and verifies it with aliak's Verifier. A request
passes only if what went on the wire is what was signed.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

import aliak
from aliak.canonical import canonical_query_string
from aliak.encoding import parse_query_string
from aliak.errors import AliakError, InvalidParameter
from aliak.integrations.httpx import AliakAuth as HttpxAuth
from aliak.integrations.requests import AliakAuth as RequestsAuth

ACTION = "DescribeRegions"
VERSION = "2014-05-26"
TIMEOUT = 5.0
ACCOUNT_ID = "1234567890123456"

# Query values that differ between form encoding, quote() and the canonical form (§4).
AWKWARD_QUERY = {
    "Text": "a b*c~d+e/f",
    "Unicode": "中文é",
    "Reserved": "k=v&w;x?",
    "Empty": "",
    "B": "1",
}


# -- the verifying server ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as it arrived on the socket."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "content-length", "chunked" or "none"

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}


class VerifyingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, verifier: aliak.Verifier) -> None:
        super().__init__(("127.0.0.1", 0), VerifyingHandler)
        self.verifier = verifier
        self.received: list[Received] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def last(self) -> Received:
        return self.received[-1]


def wire_text(value: str) -> str:
    # http.server decodes header bytes as Latin-1; the signature covers their UTF-8 reading.
    return value.encode("latin-1").decode("utf-8", "surrogateescape")


def read_chunked(stream: io.BufferedIOBase) -> bytes:
    """RFC 9112 §7.1: size line (hex, optional extensions), data, CRLF; 0 ends; trailers."""
    chunks: list[bytes] = []
    while True:
        size = int(stream.readline(1024).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return b"".join(chunks)
        chunks.append(stream.read(size))
        stream.readline(8)  # the CRLF after the data


class VerifyingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: VerifyingServer

    def do_GET(self) -> None:
        self.verify()

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output quiet

    def read_body(self) -> tuple[bytes, str]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return read_chunked(self.rfile), "chunked"
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)), "content-length"
        return b"", "none"

    def verify(self) -> None:
        body, framing = self.read_body()
        headers = [(name, wire_text(value)) for name, value in self.headers.items()]
        self.server.received.append(Received(self.command, self.path, headers, body, framing))
        if self.path.startswith("/redirect"):
            self.answer(307, {}, [("Location", "/landing")])
            return
        path, _, query = self.path.partition("?")
        try:
            request = aliak.Request(
                self.command,
                path=path,
                query=parse_query_string(query.encode("latin-1")),
                headers=headers,
                body=body,
            )
            verified = self.server.verifier.verify(request, source_ip=self.client_address[0])
        except AliakError as error:
            self.answer(error.http_status, error.to_dict())
            return
        self.answer(200, verified.to_dict())

    def answer(self, status: int, document: dict[str, Any], headers: Any = ()) -> None:
        payload = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@dataclass(frozen=True)
class Keys:
    store: aliak.MemoryStore
    access_key: aliak.AccessKey
    sts: aliak.StsCredential


@pytest.fixture(scope="module")
def keys() -> Keys:
    store = aliak.MemoryStore()
    manager = aliak.KeyManager(store)
    new = manager.create_access_key(aliak.RamUser(ACCOUNT_ID, "client"))
    sts = manager.assume_role(aliak.RamRole(ACCOUNT_ID, "Role"), session_name="s1")
    return Keys(store, new.access_key, sts)


@pytest.fixture(scope="module")
def server(keys: Keys) -> Iterator[VerifyingServer]:
    verifier = aliak.Verifier(keys.store)
    httpd = VerifyingServer(verifier)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)
        verifier.close()


# -- one driver per client: the same scenarios through each -------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    document: dict[str, Any]


class RequestsDriver:
    name = "requests"

    def auth(self, signer: Any, **options: Any) -> RequestsAuth:
        return RequestsAuth(signer, action=ACTION, version=VERSION, **options)

    def send(self, auth: Any, method: str, url: str, **options: Any) -> Answer:
        """``options``: params, headers, json, body (bytes, a file) or chunks (streamed)."""
        if "body" in options:
            options["data"] = options.pop("body")
        if "chunks" in options:
            options["data"] = iter(options.pop("chunks"))
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment for 127.0.0.1
            response = session.request(method, url, auth=auth, timeout=TIMEOUT, **options)
        return Answer(response.status_code, response.json())


class HttpxDriver:
    name = "httpx"

    def auth(self, signer: Any, **options: Any) -> HttpxAuth:
        return HttpxAuth(signer, action=ACTION, version=VERSION, **options)

    def send(self, auth: Any, method: str, url: str, **options: Any) -> Answer:
        if "body" in options:
            options["content"] = options.pop("body")
        if "chunks" in options:
            options["content"] = iter(options.pop("chunks"))
        with httpx.Client(auth=auth, timeout=TIMEOUT, trust_env=False) as client:
            response = client.request(method, url, **options)
        return Answer(response.status_code, response.json())


class AsyncHttpxDriver(HttpxDriver):
    name = "httpx-async"

    def send(self, auth: Any, method: str, url: str, **options: Any) -> Answer:
        if "body" in options:
            options["content"] = options.pop("body")
        if "chunks" in options:
            options["content"] = _async_chunks(options.pop("chunks"))
        return asyncio.run(self._send(auth, method, url, options))

    async def _send(self, auth: Any, method: str, url: str, options: dict[str, Any]) -> Answer:
        async with httpx.AsyncClient(auth=auth, timeout=TIMEOUT, trust_env=False) as client:
            response = await client.request(method, url, **options)
        return Answer(response.status_code, response.json())


async def _async_chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


Driver = RequestsDriver | HttpxDriver
DRIVERS = [RequestsDriver(), HttpxDriver(), AsyncHttpxDriver()]


@pytest.fixture(params=DRIVERS, ids=lambda driver: driver.name)
def driver(request: pytest.FixtureRequest) -> Driver:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=DRIVERS[:2], ids=lambda driver: driver.name)
def sync_driver(request: pytest.FixtureRequest) -> Driver:
    # httpx.AsyncClient takes no sync file object, so file bodies go through these two.
    return request.param  # type: ignore[no-any-return]


# -- every client ------------------------------------------------------------------------


def test_awkward_query_values_are_verified_and_sent_in_canonical_form(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    answer = driver.send(driver.auth(keys.access_key), "GET", server.url, params=AWKWARD_QUERY)

    assert answer.status == 200, answer.document
    assert answer.document["AccessKeyId"] == keys.access_key.access_key_id
    assert answer.document["Action"] == ACTION
    assert server.last().query == canonical_query_string(AWKWARD_QUERY.items())
    assert server.last().query == (
        "B=1&Empty=&Reserved=k%3Dv%26w%3Bx%3F&Text=a%20b%2Ac~d%2Be%2Ff&Unicode=%E4%B8%AD%E6%96%87%C3%A9"
    )


def test_plus_in_a_written_url_query_is_a_space_and_goes_out_as_percent_20(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    url = f"{server.url}/v1/items?Name=a+b&Tilde=%7E&Order=z"

    answer = driver.send(driver.auth(keys.access_key), "GET", url)

    assert answer.status == 200, answer.document
    assert server.last().target == "/v1/items?Name=a%20b&Order=z&Tilde=~"


def test_encoded_path_is_signed_as_sent(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    url = f"{server.url}/clusters/c-82e6%2Fb%209/attach"

    answer = driver.send(driver.auth(keys.access_key), "DELETE", url)

    assert answer.status == 200, answer.document
    assert server.last().target == "/clusters/c-82e6%2Fb%209/attach"


def test_json_body_is_verified(driver: Driver, server: VerifyingServer, keys: Keys) -> None:
    document = {"Name": "中文 name", "InstanceIds": ["i-1", "i-2"], "DryRun": True}

    answer = driver.send(driver.auth(keys.access_key), "POST", server.url, json=document)

    assert answer.status == 200, answer.document
    assert json.loads(server.last().body) == document
    assert "content-type" in answer.document["SignedHeaders"]


def test_binary_body_is_verified(driver: Driver, server: VerifyingServer, keys: Keys) -> None:
    body = bytes(range(256)) * 64

    answer = driver.send(driver.auth(keys.access_key), "PUT", f"{server.url}/blob", body=body)

    assert answer.status == 200, answer.document
    assert server.last().body == body
    # The signer adds only what it lists (issue 10 item 11): no invented content-type.
    # (A client library may add its own; neither requests nor httpx does for bytes.)
    assert "content-type" not in dict(server.last().headers)


def test_file_object_body_is_verified(
    sync_driver: Driver, server: VerifyingServer, keys: Keys, tmp_path: Path
) -> None:
    payload = b"file body \x00\xff" * 1000
    path = tmp_path / "upload.bin"
    path.write_bytes(payload)

    with path.open("rb") as file:
        answer = sync_driver.send(
            sync_driver.auth(keys.access_key), "PUT", f"{server.url}/file", body=file
        )

    assert answer.status == 200, answer.document
    assert server.last().body == payload
    assert server.last().framing == "content-length"


def test_streamed_body_is_verified_and_sent_chunked(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    # Past one spool read (1 MiB), so the spooled copy is sent in several pieces.
    chunks = [b"first;", b"\x00" * (1 << 20), b"last"]

    answer = driver.send(driver.auth(keys.access_key), "POST", server.url, chunks=chunks)

    assert answer.status == 200, answer.document
    assert server.last().framing == "chunked"
    assert server.last().body == b"".join(chunks)


def test_hmac_sm3_signature_is_verified(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    signer = aliak.Signer(keys.access_key, algorithm="ACS3-HMAC-SM3")

    answer = driver.send(driver.auth(signer), "POST", server.url, json={"a": 1})

    assert answer.status == 200, answer.document
    assert answer.document["Algorithm"] == "ACS3-HMAC-SM3"


def test_sts_credential_is_verified_with_its_security_token(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    answer = driver.send(driver.auth(keys.sts), "GET", server.url, params={"RegionId": "x"})

    assert answer.status == 200, answer.document
    assert answer.document["KeyType"] == "sts"
    assert answer.document["AccessKeyId"] == keys.sts.access_key_id
    assert "x-acs-security-token" in answer.document["SignedHeaders"]


def test_one_auth_signs_each_request_with_a_fresh_nonce(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    auth = driver.auth(keys.access_key)

    first = driver.send(auth, "GET", server.url)
    second = driver.send(auth, "GET", server.url)

    assert (first.status, second.status) == (200, 200), (first.document, second.document)
    assert first.document["Nonce"] != second.document["Nonce"]


def test_wrong_secret_is_refused_with_signature_does_not_match(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    forged = aliak.AccessKey(keys.access_key.access_key_id, "not-the-secret")

    answer = driver.send(driver.auth(forged), "GET", server.url)

    assert answer.status == 400
    assert answer.document["Code"] == "SignatureDoesNotMatch"


def test_action_and_version_headers_on_a_request_override_the_auth_defaults(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    headers = {"x-acs-action": "DescribeZones", "x-acs-version": "2020-01-01"}

    answer = driver.send(driver.auth(keys.access_key), "GET", server.url, headers=headers)

    assert answer.status == 200, answer.document
    assert (answer.document["Action"], answer.document["Version"]) == (
        "DescribeZones",
        "2020-01-01",
    )


def test_sign_all_headers_signs_every_header_the_client_sends(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    auth = driver.auth(keys.access_key, sign_all_headers=True)

    answer = driver.send(auth, "POST", server.url, chunks=[b"streamed ", b"body"])

    assert answer.status == 200, answer.document
    signed = set(answer.document["SignedHeaders"])
    assert {"accept", "user-agent", "transfer-encoding", "host"} <= signed
    assert signed == server.last().header_names() - {"authorization"}


def test_non_ascii_header_value_is_signed_as_its_wire_bytes(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    headers = {"x-acs-meta-name": "中文 é".encode()}

    answer = driver.send(driver.auth(keys.access_key), "GET", server.url, headers=headers)

    assert answer.status == 200, answer.document
    assert "x-acs-meta-name" in answer.document["SignedHeaders"]


def test_repeated_query_name_is_refused_before_anything_is_sent(
    driver: Driver, server: VerifyingServer, keys: Keys
) -> None:
    sent = len(server.received)

    with pytest.raises(InvalidParameter, match="appears twice"):
        driver.send(
            driver.auth(keys.access_key), "GET", server.url, params=[("a", "1"), ("a", "2")]
        )

    assert len(server.received) == sent


@pytest.mark.parametrize("auth_class", [RequestsAuth, HttpxAuth])
def test_credential_is_wrapped_in_a_signer_and_a_signer_is_used_as_given(
    auth_class: type[RequestsAuth | HttpxAuth], keys: Keys
) -> None:
    signer = aliak.Signer(keys.access_key, algorithm="ACS3-HMAC-SM3")

    assert auth_class(signer).signer is signer
    wrapped = auth_class(keys.access_key, sign_all_headers=True).signer
    assert (wrapped.access_key_id, wrapped.algorithm) == (
        keys.access_key.access_key_id,
        "ACS3-HMAC-SHA256",
    )
    with pytest.raises(TypeError, match="sign_all_headers"):
        auth_class(signer, sign_all_headers=True)


# -- requests ----------------------------------------------------------------------------


def requests_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def test_requests_same_prepared_request_sent_twice_is_refused_as_nonce_used(
    server: VerifyingServer, keys: Keys
) -> None:
    # A signature is single-use: sending a prepared request again replays its nonce.
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION)
    with requests_session() as session:
        prepared = session.prepare_request(requests.Request("GET", server.url, auth=auth))
        first = session.send(prepared, timeout=TIMEOUT)
        second = session.send(prepared, timeout=TIMEOUT)

    assert first.status_code == 200, first.json()
    assert second.status_code == 400
    assert second.json()["Code"] == "SignatureNonceUsed"


def test_requests_str_body_is_signed_as_the_utf8_bytes_sent(
    server: VerifyingServer, keys: Keys
) -> None:
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION, sign_all_headers=True)
    text = "中文 body: non-ASCII text"

    with requests_session() as session:
        response = session.post(server.url, data=text, auth=auth, timeout=TIMEOUT)

    assert response.status_code == 200, response.json()
    assert server.last().body == text.encode("utf-8")
    assert dict(server.last().headers)["Content-Length"] == str(len(text.encode("utf-8")))


def test_requests_form_body_is_verified(server: VerifyingServer, keys: Keys) -> None:
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION)
    form = {"Name": "a b", "Tag.1.Key": "k*~"}

    with requests_session() as session:
        response = session.post(server.url, data=form, auth=auth, timeout=TIMEOUT)

    assert response.status_code == 200, response.json()
    assert parse_query_string(server.last().body) == tuple(form.items())


def test_requests_file_body_is_sent_from_its_current_position(
    server: VerifyingServer, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"SKIPPED:" + b"payload" * 100)
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION)

    with path.open("rb") as file, requests_session() as session:
        file.seek(len(b"SKIPPED:"))
        response = session.put(server.url, data=file, auth=auth, timeout=TIMEOUT)

    assert response.status_code == 200, response.json()
    assert server.last().body == b"payload" * 100


def test_requests_str_header_value_is_signed_as_the_latin1_bytes_sent(
    server: VerifyingServer, keys: Keys
) -> None:
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION)

    with requests_session() as session:
        response = session.get(
            server.url, headers={"x-acs-meta-name": "café"}, auth=auth, timeout=TIMEOUT
        )

    assert response.status_code == 200, response.json()
    assert dict(server.last().headers)["x-acs-meta-name"] == "caf\udce9"  # the byte 0xE9


def test_requests_header_value_beyond_latin1_is_refused(keys: Keys) -> None:
    auth = RequestsAuth(keys.access_key, action=ACTION, version=VERSION)
    request = requests.Request("GET", "http://127.0.0.1/", headers={"x-acs-meta-name": "中"})

    with pytest.raises(InvalidParameter, match="Latin-1"):
        request.prepare().prepare_auth(auth)


def test_requests_redirect_follow_up_carries_no_signature_and_no_sts_token(
    server: VerifyingServer, keys: Keys
) -> None:
    auth = RequestsAuth(keys.sts, action=ACTION, version=VERSION)

    with requests_session() as session:
        response = session.get(f"{server.url}/redirect", auth=auth, timeout=TIMEOUT)

    redirected, follow_up = server.received[-2:]
    assert redirected.target == "/redirect"
    assert {"authorization", "x-acs-security-token"} <= redirected.header_names()
    assert follow_up.target == "/landing"
    assert not follow_up.header_names() & {
        "authorization",
        "x-acs-security-token",
        "x-acs-signature-nonce",
        "x-acs-date",
    }
    assert response.status_code == 400  # unsigned: the server refuses it


# -- httpx -------------------------------------------------------------------------------


def test_httpx_signed_request_sent_again_is_refused_as_nonce_used(
    server: VerifyingServer, keys: Keys
) -> None:
    # auth_flow signs the request in place; sending that request again replays its nonce.
    auth = HttpxAuth(keys.access_key, action=ACTION, version=VERSION)
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        request = client.build_request("GET", server.url, params={"RegionId": "x"})
        first = client.send(request, auth=auth)
        second = client.send(request)

    assert first.status_code == 200, first.json()
    assert second.status_code == 400
    assert second.json()["Code"] == "SignatureNonceUsed"


def test_httpx_async_signed_request_sent_again_is_refused_as_nonce_used(
    server: VerifyingServer, keys: Keys
) -> None:
    auth = HttpxAuth(keys.access_key, action=ACTION, version=VERSION)

    async def send_twice() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
            request = client.build_request("POST", server.url, json={"a": 1})
            return await client.send(request, auth=auth), await client.send(request)

    first, second = asyncio.run(send_twice())

    assert first.status_code == 200, first.json()
    assert second.json()["Code"] == "SignatureNonceUsed"


def test_httpx_signing_an_already_signed_request_again_is_refused(keys: Keys) -> None:
    auth = HttpxAuth(keys.access_key, action=ACTION, version=VERSION)
    request = httpx.Request("GET", "http://127.0.0.1/")
    next(auth.sync_auth_flow(request))

    with pytest.raises(InvalidParameter, match="already signed"):
        next(auth.sync_auth_flow(request))


def test_httpx_auth_flow_leaves_the_request_ready_to_send_verbatim(keys: Keys) -> None:
    auth = HttpxAuth(keys.access_key, action=ACTION, version=VERSION)
    request = httpx.Request("GET", "http://example.com:8080/p", params=AWKWARD_QUERY)

    signed: httpx.Request = next(auth.sync_auth_flow(request))

    assert signed is request
    assert signed.url.query.decode() == canonical_query_string(AWKWARD_QUERY.items())
    assert signed.headers["host"] == "example.com:8080"
    assert signed.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=")
