"""Request: the neutral, frozen value; validation of every field, from_url, headers."""

from __future__ import annotations

import io

import attrs
import pytest

from aliak import AliakError, Headers, InvalidParameter, Request


def test_request_is_frozen_and_compared_by_value() -> None:
    a = Request("post", host="h", query={"A": "1"}, headers={"X": "1"}, body="é")
    b = Request("POST", host="h", query=[("A", "1")], headers=[("X", "1")], body=b"\xc3\xa9")
    assert a == b
    assert a.method == "POST"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.method = "GET"  # type: ignore[misc]


def test_headers_lookup_is_case_insensitive_and_order_is_kept() -> None:
    headers = Headers([("X-B", "1"), ("a", "2"), ("x-b", "3")])
    assert headers["x-b"] == "1,3"
    assert headers.get_all("X-b") == ["1", "3"]
    assert "A" in headers
    assert list(headers) == ["X-B", "a", "x-b"]
    assert headers.get("missing") is None
    with pytest.raises(KeyError):
        headers["missing"]


def test_from_url_splits_host_port_path_and_decodes_query() -> None:
    request = Request.from_url(
        "get", "https://ecs.example.com:8443/a%2Fb/c?x=1+2&y=%7E&z", body=b""
    )
    assert request.host == "ecs.example.com:8443"
    assert request.path == "/a%2Fb/c"
    assert request.query == (("x", "1 2"), ("y", "~"), ("z", ""))


def test_from_url_adds_given_query_parameters() -> None:
    request = Request.from_url("GET", "http://h/?a=1", query={"B": [1, 2]})
    assert request.query == (("a", "1"), ("B.1", "1"), ("B.2", "2"))


@pytest.mark.parametrize("url", ["ftp://h/", "/relative", "https://user:pw@h/"])
def test_from_url_refuses_what_it_cannot_sign(url: str) -> None:
    with pytest.raises(AliakError) as caught:
        Request.from_url("GET", url)
    assert caught.value.code == "InvalidParameter"
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("name", ["bad name", "naïve", "", "x:y", "a\nb"])
def test_header_name_with_space_or_non_ascii_is_refused_naming_the_header(name: str) -> None:
    with pytest.raises(AliakError) as caught:
        Request("GET", host="h", headers={name: "v"})
    assert caught.value.code == "InvalidParameter"
    assert "headers[" in caught.value.message


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "nul\x00", "bell\x07"])
def test_header_value_with_control_characters_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(AliakError) as caught:
        Request("GET", host="h", headers={"X-Token": value})
    assert "X-Token" in caught.value.message
    assert value not in str(caught.value)


def test_header_value_of_a_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="X-N"):
        Request("GET", host="h", headers={"X-N": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("path", ["no-slash", "/a b", "/中", "/a?b", "/a#b", "/%zz", "/%4"])
def test_path_must_be_percent_encoded_as_on_the_request_line(path: str) -> None:
    with pytest.raises(AliakError) as caught:
        Request("GET", host="h", path=path)
    assert caught.value.message == 'The specified parameter "path" is not valid.'


def test_raw_sub_delims_and_lower_case_hex_are_accepted_in_paths() -> None:
    assert Request("GET", path="/(x)/a%2fb/~").path == "/(x)/a%2fb/~"


@pytest.mark.parametrize("host", ["h/x", "https://h", "h h", "例え.jp"])
def test_host_must_be_a_bare_ascii_host(host: str) -> None:
    with pytest.raises(AliakError):
        Request("GET", host=host)


def test_method_must_be_a_token() -> None:
    with pytest.raises(AliakError):
        Request("GE T")
    with pytest.raises(TypeError):
        Request(1)  # type: ignore[arg-type]


def test_body_types() -> None:
    assert Request("PUT", body=None).body == b""
    assert Request("PUT", body=bytearray(b"ab")).body == b"ab"
    assert Request("PUT", body=[b"a", b"b"]).body == b"ab"
    stream = io.BytesIO(b"x")
    assert Request("PUT", body=stream).body is stream
    assert Request("PUT", body=stream).is_streamed
    with pytest.raises(TypeError, match="binary mode"):
        Request("PUT", body=io.StringIO("x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Request("PUT", body=12)  # type: ignore[arg-type]


def test_repr_masks_authorization_and_security_token_and_hides_the_body() -> None:
    request = Request(
        "GET",
        host="h",
        headers={"Authorization": "ACS3 sig", "x-acs-security-token": "tok-secret"},
        body=b"body-secret",
    )
    text = repr(request)
    assert "tok-secret" not in text
    assert "ACS3 sig" not in text
    assert "body-secret" not in text
    assert "<11 bytes>" in text


def test_from_wire_keeps_the_raw_path_query_and_repeated_headers() -> None:
    pairs = [("Host", "ecs.example.com:8443"), ("X-Acs-Test", "b"), ("x-acs-test", "a")]
    request = Request.from_wire("post", "/a%2Fb/c%20d", b"b=2&a=%E4%B8%AD+x&e", pairs, b"{}")
    assert request.method == "POST"
    assert request.host == "ecs.example.com:8443"  # the first host header, as received
    assert request.path == "/a%2Fb/c%20d"  # still encoded, never normalised
    assert request.query == (("b", "2"), ("a", "中 x"), ("e", ""))  # order as received
    assert request.headers.items() == tuple(pairs)
    assert request.headers.get_all("x-acs-test") == ["b", "a"]
    assert request.body == b"{}"


@pytest.mark.parametrize(
    ("raw_path", "path"),
    [
        ("", "/"),
        ("/p?ignored=1", "/p"),  # WSGI's RAW_URI carries the query; raw_query is authoritative
        ("http://h:80/p%20q?x=1", "/p%20q"),  # absolute-form, as a proxy receives it
        ("HTTPS://h", "/"),
        ("//double//slashes/./x", "//double//slashes/./x"),
    ],
)
def test_from_wire_reduces_the_request_target_to_its_path(raw_path: str, path: str) -> None:
    assert Request.from_wire("GET", raw_path, "", ()).path == path


def test_from_wire_without_a_host_header_has_no_host_and_refuses_what_request_refuses() -> None:
    assert Request.from_wire("GET", "/", "", [("host", "")]).host is None
    assert Request.from_wire("GET", "/", "", []).host is None
    with pytest.raises(AliakError):
        Request.from_wire("GET", "/a b", "", [])
    with pytest.raises(AliakError):
        Request.from_wire("GET", "/", "", [("x-acs-bad", "line\r\nbreak")])


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("http://[::1/p", "/p"),
        ("http://[zz]/p", "/p"),
        ("https://[/x?y=1", "/x"),
        ("http://[", "/"),
    ],
)
def test_from_wire_takes_the_path_of_an_absolute_target_whatever_its_authority(
    target: str, path: str
) -> None:
    # Never a bare ValueError (a 500 from a middleware), on every Python version.
    assert Request.from_wire("GET", target, "", [("host", "h")]).path == path


@pytest.mark.parametrize("sent", [" api.example.com", "api.example.com ", "\tapi.example.com\t"])
def test_from_wire_takes_the_host_without_its_optional_whitespace(sent: str) -> None:
    assert Request.from_wire("GET", "/", "", [("Host", sent)]).host == "api.example.com"


def test_with_body_swaps_only_the_body() -> None:
    head = Request.from_wire("POST", "/p", "a=1", [("host", "h"), ("x-acs-date", "d")], b"")
    full = head.with_body(b"{}")
    assert (full.method, full.host, full.path, full.query, full.body) == (
        "POST",
        "h",
        "/p",
        (("a", "1"),),
        b"{}",
    )
    assert list(full.headers.items()) == list(head.headers.items())
    with pytest.raises(TypeError):
        head.with_body("text")  # type: ignore[arg-type]


def test_from_url_refuses_a_malformed_authority_as_invalid_url() -> None:
    with pytest.raises(InvalidParameter) as caught:
        Request.from_url("GET", "http://[::1/p")
    assert caught.value.message == 'The specified parameter "url" is not valid.'
