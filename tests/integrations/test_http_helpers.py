"""The pieces every server integration shares: error responses and client addresses."""

from __future__ import annotations

import json

from aliak.errors import IncompleteSignature, PayloadTooLarge
from aliak.integrations.http import TrustedProxies, client_address, error_response

PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("203.0.113.9", ["198.51.100.1"], PROXIES) == "203.0.113.9"


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() -> None:
    forwarded = ["198.51.100.66, 203.0.113.7", "10.1.1.1"]
    assert client_address("127.0.0.1", forwarded, PROXIES) == "203.0.113.7"


def test_a_non_address_hop_makes_the_client_unknown_not_the_proxy() -> None:
    assert client_address("127.0.0.1", ["203.0.113.7, unknown"], PROXIES) is None


def test_only_trusted_hops_means_the_left_most_of_them() -> None:
    assert client_address("127.0.0.1", ["10.2.2.2"], PROXIES) == "10.2.2.2"
    assert client_address(None, ["203.0.113.7"], PROXIES) is None


def test_error_response_shape_headers_and_status() -> None:
    status, headers, body = error_response(PayloadTooLarge(), host="ecs.cn-hangzhou.aliyuncs.com")
    document = json.loads(body)
    assert status == 413
    assert list(document) == ["RequestId", "HostId", "Code", "Message", "Recommend"]
    assert document["Recommend"].endswith(f"product=Ecs&requestId={document['RequestId']}")
    names = dict(headers)
    assert names["x-acs-request-id"] == document["RequestId"]
    assert names["Content-Length"] == str(len(body))
    assert "GMT" in names["Date"]


def test_error_response_renders_a_host_with_undecodable_bytes() -> None:
    status, _, body = error_response(IncompleteSignature(), host="\udcff.example.com")
    assert status == 400
    assert json.loads(body)["Code"] == "IncompleteSignature"
