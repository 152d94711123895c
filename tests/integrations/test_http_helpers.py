"""The pieces every server integration shares: error responses and client addresses."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@given(
    peers=st.lists(
        st.sampled_from(
            [
                "203.0.113.9",
                "::ffff:203.0.113.9",
                "127.0.0.1",
                "::ffff:10.0.0.5",
                "10.9.9.9",
                "fe80::1%eth0",
                "unix:/run/app.sock",
                "203.0.113.9 ",
            ]
        ),
        min_size=1,
        max_size=12,
    ),
    hops=st.lists(st.sampled_from(["198.51.100.1", "203.0.113.7", "10.1.1.1", "junk"])),
)
def test_the_remembered_peers_never_change_an_answer(peers: list[str], hops: list[str]) -> None:
    # TrustedProxies remembers the canonical text of untrusted peers; a peer must come out
    # as a fresh TrustedProxies would say, whatever was asked before and whatever each
    # request forwards (a trusted proxy's X-Forwarded-For is read every time).
    remembering = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    for number, peer in enumerate(peers):
        forwarded = [", ".join(hops[number:] + hops[:number])] if hops else []
        fresh = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
        assert client_address(peer, forwarded, remembering) == client_address(
            peer, forwarded, fresh
        )


def test_the_memo_of_peers_is_bounded() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    for number in range(5000):
        assert (
            client_address(f"2001:db8::{number + 1:x}", [], proxies) == f"2001:db8::{number + 1:x}"
        )
    assert len(proxies._peers) <= 4096
    assert client_address("10.0.0.1", ["203.0.113.7"], proxies) == "203.0.113.7"
    assert "10.0.0.1" not in proxies._peers  # a trusted proxy is never remembered


# -- one address normalisation: dual-stack peers, mapped and zoned forms -----------------


def _spellings(address: ipaddress.IPv4Address) -> list[str]:
    high, low = int(address) >> 16, int(address) & 0xFFFF
    return [str(address), f"::ffff:{address}", f"::FFFF:{high:X}:{low:x}", f"::ffff:{address}%eth0"]


def test_a_trusted_ipv4_proxy_seen_through_a_dual_stack_socket_is_trusted() -> None:
    # A server bound to :: reports the IPv4 proxy 127.0.0.1 as ::ffff:127.0.0.1.
    assert "::ffff:127.0.0.1" in PROXIES
    assert "::FFFF:10.9.8.7" in PROXIES
    assert client_address("::ffff:127.0.0.1", ["203.0.113.7"], PROXIES) == "203.0.113.7"
    assert client_address("::ffff:10.1.1.1", ["198.51.100.4"], PROXIES) == "198.51.100.4"


def test_a_trusted_proxy_written_in_mapped_form_is_the_ipv4_proxy() -> None:
    mapped = TrustedProxies(["::ffff:10.0.0.0/104", "::ffff:192.0.2.1"])
    assert "10.1.2.3" in mapped
    assert "192.0.2.1" in mapped
    assert "192.0.2.2" not in mapped
    assert client_address("192.0.2.1", ["203.0.113.7"], mapped) == "203.0.113.7"


def test_an_untrusted_mapped_peer_is_the_client_in_ipv4_form_whatever_it_forwards() -> None:
    assert client_address("::ffff:203.0.113.9", ["10.0.0.1"], PROXIES) == "203.0.113.9"
    assert client_address("::ffff:203.0.113.9", ["127.0.0.1"], PROXIES) == "203.0.113.9"


def test_mapped_forms_in_x_forwarded_for_are_normalised_and_trusted_hops_skipped() -> None:
    assert client_address("127.0.0.1", ["::ffff:203.0.113.7"], PROXIES) == "203.0.113.7"
    # The proxy's own hop written mapped is still a trusted proxy: the client is left of it.
    forwarded = ["198.51.100.66, 203.0.113.7, ::ffff:10.0.0.5"]
    assert client_address("127.0.0.1", forwarded, PROXIES) == "203.0.113.7"
    assert client_address("127.0.0.1", ["2001:DB8::7"], PROXIES) == "2001:db8::7"


def test_zone_ids_are_dropped_from_peers_hops_and_proxies() -> None:
    link_local = TrustedProxies(["fe80::%eth0/10"])
    assert "fe80::1%eth0" in link_local
    assert client_address("fe80::1%eth0", ["203.0.113.7"], link_local) == "203.0.113.7"
    assert client_address("fe80::2%eth1", [], PROXIES) == "fe80::2"
    assert client_address("127.0.0.1", ["fe80::9%en0"], PROXIES) == "fe80::9"


@pytest.mark.parametrize(
    "hop", ["unknown", "", "[2001:db8::1]", "[2001:db8::1]:443", "203.0.113.7:80", "1.2.3.4%x"]
)
def test_a_hop_that_is_not_a_bare_address_still_makes_the_client_unknown(hop: str) -> None:
    assert client_address("::ffff:127.0.0.1", [f"203.0.113.7, {hop}"], PROXIES) is None
    assert client_address("127.0.0.1", [hop], PROXIES) is None


def test_several_x_forwarded_for_headers_read_as_one_list_as_before() -> None:
    headers = ["198.51.100.1", "203.0.113.7, ::ffff:10.0.0.1", "::ffff:127.0.0.1"]
    assert client_address("::ffff:127.0.0.1", headers, PROXIES) == "203.0.113.7"


def test_a_peer_that_is_no_address_is_passed_on_as_given() -> None:
    assert client_address("testclient", ["203.0.113.7"], PROXIES) == "testclient"


def test_a_trusted_proxy_that_is_no_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an IPv4/IPv6 address"):
        TrustedProxies(["[::1]"])


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.data())
def test_any_spelling_of_peer_and_hop_gives_what_the_plain_ipv4_forms_give(
    peer: ipaddress.IPv4Address, hop: ipaddress.IPv4Address, data: st.DataObject
) -> None:
    peer_text = data.draw(st.sampled_from(_spellings(peer)))
    hop_text = data.draw(st.sampled_from(_spellings(hop)))
    assert (peer_text in PROXIES) == (str(peer) in PROXIES)
    assert client_address(peer_text, [hop_text], PROXIES) == client_address(
        str(peer), [str(hop)], PROXIES
    )


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
