"""Network ACLs (spec verification.md §6): NetworkPolicy validation and the evaluation matrix."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aliak.acl import (
    ALLOW_ALL_VPC,
    MAX_ENTRIES_PER_POLICY,
    MAX_POLICIES_PER_TARGET,
    AclDecision,
    CompiledPolicy,
    NetworkPolicy,
    compile_policy,
    evaluate_network_access,
    normalize_ip,
    normalize_network,
    parse_source_ip,
)
from aliak.errors import AliakError, InvalidParameter, LimitExceeded

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def policy(
    public: Iterable[str] | str | None = None,
    vpcs: Mapping[str, Iterable[str] | str] | None = None,
    *,
    enabled: bool = True,
) -> NetworkPolicy:
    return NetworkPolicy(public=public, vpcs=vpcs, enabled=enabled)


def compiled(
    public: Iterable[str] | str | None = None,
    vpcs: Mapping[str, Iterable[str] | str] | None = None,
    *,
    enabled: bool = True,
) -> CompiledPolicy:
    result = compile_policy(policy(public, vpcs, enabled=enabled))
    assert result is not None
    return result


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return parse_source_ip(text)


# --- NetworkPolicy: accepted input and normalisation ------------------------------------


def test_ipv4_and_ipv6_addresses_become_host_cidrs() -> None:
    assert policy(["203.0.113.7", "2001:DB8:0:0::1"]).public == (
        "203.0.113.7/32",
        "2001:db8::1/128",
    )


def test_ipv4_and_ipv6_cidrs_are_accepted_and_normalised() -> None:
    result = policy(["10.0.0.0/8", "2001:0DB8:0000::/32", "0.0.0.0/0", "::/0"])
    assert result.public == ("10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0", "::/0")


def test_entries_are_trimmed_of_surrounding_whitespace() -> None:
    assert policy([" 10.0.0.0/8\t"]).public == ("10.0.0.0/8",)


def test_console_style_string_splits_on_spaces_commas_and_semicolons() -> None:
    result = policy(" 10.0.0.1, 10.0.0.2;2001:db8::/32  192.168.0.0/16 ;, \n172.16.0.0/12 ")
    assert result.public == (
        "10.0.0.1/32",
        "10.0.0.2/32",
        "2001:db8::/32",
        "192.168.0.0/16",
        "172.16.0.0/12",
    )


def test_console_style_string_is_accepted_for_vpc_rules_too() -> None:
    result = policy(vpcs={"vpc-1": "10.0.0.0/8;192.168.1.1"})
    assert result.vpcs == (("vpc-1", ("10.0.0.0/8", "192.168.1.1/32")),)


def test_no_public_rule_is_none_and_an_empty_rule_is_an_empty_tuple() -> None:
    assert policy(None).public is None
    assert policy([]).public == ()
    assert policy("").public == ()


def test_vpc_rules_are_sorted_by_vpc_id() -> None:
    result = policy(vpcs={"vpc-b": ["10.0.0.0/8"], "vpc-a": ["::/0"]})
    assert [vpc_id for vpc_id, _ in result.vpcs] == ["vpc-a", "vpc-b"]


def test_duplicates_are_collapsed_keeping_first_order() -> None:
    result = policy(["10.0.0.1", "10.0.0.0/8", "10.0.0.1/32", "2001:db8::1", "2001:DB8::1/128"])
    assert result.public == ("10.0.0.1/32", "10.0.0.0/8", "2001:db8::1/128")


def test_duplicates_collapse_inside_vpc_rules() -> None:
    result = policy(vpcs={"vpc-1": "10.0.0.0/8 10.0.0.0/8,10.0.0.0/8"})
    assert result.vpcs == (("vpc-1", ("10.0.0.0/8",)),)


def test_equal_input_gives_equal_policies() -> None:
    assert policy("10.0.0.0/8") == policy(["10.0.0.0/8"])
    assert policy("10.0.0.0/8") != policy("10.0.0.0/8", enabled=False)


def test_a_policy_can_be_built_without_naming_vpcs() -> None:
    assert NetworkPolicy(public="203.0.113.0/24").vpcs == ()
    assert NetworkPolicy() == NetworkPolicy(public=None, vpcs=None, enabled=True)


def test_a_policy_can_be_copied_with_a_changed_field() -> None:
    original = policy("203.0.113.0/24", {"vpc-1": "10.0.0.0/8"})
    disabled = attrs.evolve(original, enabled=False)
    assert disabled.enabled is False
    assert (disabled.public, disabled.vpcs) == (original.public, original.vpcs)


def test_the_stored_form_is_accepted_back_unchanged() -> None:
    original = policy("203.0.113.0/24 2001:db8::/32", {"vpc-1": "10.0.0.0/8", "vpc-2": "::/0"})
    copy = NetworkPolicy(public=original.public, vpcs=original.vpcs)  # type: ignore[arg-type]
    assert copy == original


@pytest.mark.parametrize("vpcs", [("vpc-1",), (("vpc-1", "10.0.0.0/8", "extra"),)], ids=repr)
def test_a_malformed_stored_vpc_form_is_a_type_error(vpcs: tuple[object, ...]) -> None:
    with pytest.raises((TypeError, AliakError)):
        NetworkPolicy(vpcs=vpcs)  # type: ignore[arg-type]


# --- NetworkPolicy: refused input ------------------------------------------------------------


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "192.168.1.0/16", "2001:db8::1/32"])
def test_a_cidr_with_host_bits_set_is_refused(entry: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy([entry])
    assert caught.value.code == "InvalidParameter"
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    "entry", ["not-an-ip", "10.0.0.256", "10.0.0.0/33", "::/129", "10.0.0.0/8/8", "2001:::1"]
)
def test_a_garbage_entry_is_refused_naming_the_field(entry: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy(["10.0.0.0/8", entry])
    assert caught.value.parameter == "public"
    assert '"public"' in caught.value.message


def test_a_garbage_vpc_entry_is_refused_naming_the_vpc_field() -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy(vpcs={"vpc-1": ["10.0.0.0/8", "nonsense"]})
    assert "vpcs" in caught.value.parameter
    assert "vpc-1" in caught.value.parameter


def test_a_huge_garbage_entry_is_not_echoed_back() -> None:
    huge = "x" * 100_000
    with pytest.raises(InvalidParameter) as caught:
        policy(huge)
    error = caught.value
    assert error.code == "InvalidParameter"
    assert "x" * 100 not in str(error)
    assert "x" * 100 not in repr(error)
    assert len(str(error)) < 300
    assert huge not in error.message


def test_fifty_entries_are_accepted() -> None:
    entries = [f"10.0.0.{i}" for i in range(MAX_ENTRIES_PER_POLICY)]
    assert MAX_ENTRIES_PER_POLICY == 50
    assert len(policy(entries).public or ()) == 50
    assert len(policy(vpcs={"vpc-1": entries}).vpcs[0][1]) == 50


def test_fifty_one_entries_are_refused_as_limit_exceeded() -> None:
    entries = [f"10.0.0.{i}" for i in range(51)]
    with pytest.raises(LimitExceeded) as caught:
        policy(entries)
    assert caught.value.code == "LimitExceeded"
    assert caught.value.http_status == 400


def test_fifty_one_vpc_entries_are_refused_as_limit_exceeded() -> None:
    entries = " ".join(f"2001:db8::{i:x}" for i in range(51))
    with pytest.raises(LimitExceeded) as caught:
        policy(vpcs={"vpc-1": entries})
    assert caught.value.code == "LimitExceeded"


def test_the_entry_limit_counts_distinct_entries() -> None:
    entries = [f"10.0.0.{i}" for i in range(50)] + ["10.0.0.0/32"]
    assert len(policy(entries).public or ()) == 50


def test_a_public_rule_and_seven_vpc_rules_make_eight_policies_and_are_accepted() -> None:
    assert MAX_POLICIES_PER_TARGET == 8
    vpcs = {f"vpc-{i}": ["10.0.0.0/8"] for i in range(7)}
    assert len(policy(["0.0.0.0/0"], vpcs).vpcs) == 7


def test_eight_vpc_rules_without_a_public_rule_are_accepted() -> None:
    vpcs = {f"vpc-{i}": ["10.0.0.0/8"] for i in range(8)}
    assert len(policy(None, vpcs).vpcs) == 8


def test_a_public_rule_and_eight_vpc_rules_are_refused_as_limit_exceeded() -> None:
    vpcs = {f"vpc-{i}": ["10.0.0.0/8"] for i in range(8)}
    with pytest.raises(LimitExceeded) as caught:
        policy(["0.0.0.0/0"], vpcs)
    assert caught.value.code == "LimitExceeded"


def test_an_empty_public_rule_still_counts_as_a_policy() -> None:
    vpcs = {f"vpc-{i}": ["10.0.0.0/8"] for i in range(8)}
    with pytest.raises(LimitExceeded):
        policy([], vpcs)


@pytest.mark.parametrize("vpc_id", ["", "vpc 1", "vpc/1", "vpc:1", "v" * 129, "vpc-1\n", "vpc-é"])
def test_a_bad_vpc_id_is_refused(vpc_id: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy(vpcs={vpc_id: ["10.0.0.0/8"]})
    assert caught.value.code == "InvalidParameter"
    assert caught.value.parameter == "vpcs"


@pytest.mark.parametrize("vpc_id", ["vpc-bp1abc", "v" * 128, "A.b_c-9", ALLOW_ALL_VPC])
def test_a_good_vpc_id_is_accepted(vpc_id: str) -> None:
    assert policy(vpcs={vpc_id: ["10.0.0.0/8"]}).vpcs[0][0] == vpc_id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"public": [1]},
        {"public": 123},
        {"public": [ipaddress.ip_network("10.0.0.0/8")]},
        {"public": ["10.0.0.0/8", None]},
        {"public": b"10.0.0.0/8"},
        {"vpcs": [("vpc-1", ["10.0.0.0/8"])]},
        {"vpcs": "vpc-1"},
        {"vpcs": {"vpc-1": [10]}},
    ],
    ids=repr,
)
def test_wrong_types_raise_type_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        NetworkPolicy(**kwargs)  # type: ignore[arg-type]


# --- to_dict / from_dict ------------------------------------------------------------------


def test_to_dict_is_plain_json_data() -> None:
    result = policy("203.0.113.0/24", {"vpc-1": "10.0.0.0/8"}, enabled=False).to_dict()
    assert result == {
        "public": ["203.0.113.0/24"],
        "vpcs": {"vpc-1": ["10.0.0.0/8"]},
        "enabled": False,
    }
    assert policy(None).to_dict()["public"] is None


def test_from_dict_accepts_a_dict_without_vpcs() -> None:
    result = NetworkPolicy.from_dict({"public": ["10.0.0.0/8"]})
    assert result == policy(["10.0.0.0/8"])
    assert result.enabled is True


def test_from_dict_validates_like_the_constructor() -> None:
    with pytest.raises(InvalidParameter):
        NetworkPolicy.from_dict({"public": ["10.0.0.1/8"], "vpcs": {}})
    with pytest.raises(LimitExceeded):
        NetworkPolicy.from_dict({"vpcs": {f"vpc-{i}": [] for i in range(9)}})


def _ipv4_network(value: int, prefix: int) -> IpNetwork:
    return ipaddress.IPv4Network((value, prefix), strict=False)


def _ipv6_network(value: int, prefix: int) -> IpNetwork:
    return ipaddress.IPv6Network((value, prefix), strict=False)


ipv4_networks = st.builds(_ipv4_network, st.integers(0, 2**32 - 1), st.integers(0, 32))
ipv6_networks = st.builds(_ipv6_network, st.integers(0, 2**128 - 1), st.integers(0, 128))
networks = st.one_of(ipv4_networks, ipv6_networks)
entry_lists = st.lists(networks.map(str), max_size=MAX_ENTRIES_PER_POLICY)
vpc_ids = st.from_regex(r"[A-Za-z0-9._\-]{1,20}", fullmatch=True)


@st.composite
def valid_policies(draw: st.DrawFn) -> NetworkPolicy:
    public = draw(st.none() | entry_lists)
    vpc_limit = MAX_POLICIES_PER_TARGET - (public is not None)
    vpcs = draw(st.dictionaries(vpc_ids, entry_lists, max_size=vpc_limit))
    return policy(public, vpcs, enabled=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(valid_policies())
def test_to_dict_from_dict_round_trip(original: NetworkPolicy) -> None:
    data = original.to_dict()
    assert NetworkPolicy.from_dict(data) == original
    assert NetworkPolicy.from_dict(data).to_dict() == data


# --- evaluate_network_access: the §6 matrix ---------------------------------------------------


def test_no_policies_allow_with_no_level_and_no_rule() -> None:
    decision = evaluate_network_access(None, None, ip("198.51.100.1"), None)
    assert decision == AclDecision(allowed=True, level=None, rule=None)


def test_no_policies_allow_even_without_a_source_address() -> None:
    assert evaluate_network_access(None, None, None, None).allowed is True


def test_compile_policy_of_none_is_none() -> None:
    assert compile_policy(None) is None


def test_an_account_policy_alone_is_applied() -> None:
    account = compiled("203.0.113.0/24")
    allowed = evaluate_network_access(None, account, ip("203.0.113.7"), None)
    assert allowed == AclDecision(allowed=True, level="account", rule="public:203.0.113.0/24")
    denied = evaluate_network_access(None, account, ip("198.51.100.1"), None)
    assert denied == AclDecision(allowed=False, level="account", rule=None)


def test_a_key_policy_replaces_the_account_policy_without_merging() -> None:
    account = compiled("198.51.100.0/24")
    key = compiled("203.0.113.0/24")
    only_in_account = evaluate_network_access(key, account, ip("198.51.100.9"), None)
    assert only_in_account == AclDecision(allowed=False, level="key", rule=None)
    in_key = evaluate_network_access(key, account, ip("203.0.113.9"), None)
    assert in_key == AclDecision(allowed=True, level="key", rule="public:203.0.113.0/24")


def test_a_key_policy_denies_even_when_the_account_allows_everything() -> None:
    account = compiled("0.0.0.0/0 ::/0")
    key = compiled(None)
    decision = evaluate_network_access(key, account, ip("203.0.113.7"), None)
    assert decision == AclDecision(allowed=False, level="key", rule=None)


def test_a_disabled_key_policy_counts_as_absent_so_the_account_policy_applies() -> None:
    account = compiled("198.51.100.0/24")
    key = compiled("0.0.0.0/0", enabled=False)
    denied = evaluate_network_access(key, account, ip("203.0.113.7"), None)
    assert denied == AclDecision(allowed=False, level="account", rule=None)
    allowed = evaluate_network_access(key, account, ip("198.51.100.1"), None)
    assert allowed == AclDecision(allowed=True, level="account", rule="public:198.51.100.0/24")


def test_a_disabled_account_policy_allows() -> None:
    account = compiled(None, enabled=False)
    decision = evaluate_network_access(None, account, ip("203.0.113.7"), None)
    assert decision == AclDecision(allowed=True, level=None, rule=None)


def test_disabled_key_and_account_policies_allow() -> None:
    key = compiled(None, enabled=False)
    account = compiled(None, enabled=False)
    assert evaluate_network_access(key, account, ip("203.0.113.7"), None).allowed is True


def test_an_enabled_policy_without_a_public_rule_denies_all_public_traffic() -> None:
    key = compiled(None, {ALLOW_ALL_VPC: "0.0.0.0/0 ::/0"})
    for source in ("203.0.113.7", "10.0.0.1", "2001:db8::1", "::1"):
        assert evaluate_network_access(key, None, ip(source), None).allowed is False


def test_an_enabled_policy_with_an_empty_public_rule_denies_all_public_traffic() -> None:
    key = compiled([])
    assert evaluate_network_access(key, None, ip("203.0.113.7"), None).allowed is False


def test_allow_all_public_is_both_default_routes() -> None:
    key = compiled("0.0.0.0/0 ::/0")
    v4 = evaluate_network_access(key, None, ip("203.0.113.7"), None)
    v6 = evaluate_network_access(key, None, ip("2001:db8::7"), None)
    assert (v4.allowed, v4.rule) == (True, "public:0.0.0.0/0")
    assert (v6.allowed, v6.rule) == (True, "public:::/0")


def test_a_request_without_vpc_id_never_matches_vpc_rules() -> None:
    key = compiled("198.51.100.0/24", {"vpc-1": "10.0.0.0/8", ALLOW_ALL_VPC: "0.0.0.0/0"})
    decision = evaluate_network_access(key, None, ip("10.1.2.3"), None)
    assert decision == AclDecision(allowed=False, level="key", rule=None)


def test_a_request_with_vpc_id_never_matches_the_public_rule() -> None:
    key = compiled("0.0.0.0/0 ::/0", {"vpc-1": "10.0.0.0/8"})
    decision = evaluate_network_access(key, None, ip("203.0.113.7"), "vpc-1")
    assert decision == AclDecision(allowed=False, level="key", rule=None)


def test_a_request_with_vpc_id_matches_the_rule_of_that_vpc() -> None:
    key = compiled(None, {"vpc-1": "10.0.0.0/8", "vpc-2": "192.168.0.0/16"})
    decision = evaluate_network_access(key, None, ip("10.1.2.3"), "vpc-1")
    assert decision == AclDecision(allowed=True, level="key", rule="vpc-1:10.0.0.0/8")


def test_a_request_with_vpc_id_does_not_match_another_vpcs_rule() -> None:
    key = compiled(None, {"vpc-1": "10.0.0.0/8", "vpc-2": "192.168.0.0/16"})
    assert evaluate_network_access(key, None, ip("192.168.1.1"), "vpc-1").allowed is False
    assert evaluate_network_access(key, None, ip("10.1.2.3"), "vpc-3").allowed is False


def test_vpc_ids_match_exactly() -> None:
    key = compiled(None, {"vpc-1": "10.0.0.0/8"})
    for other in ("VPC-1", "vpc-1 ", "vpc-10", "vpc-"):
        assert evaluate_network_access(key, None, ip("10.1.2.3"), other).allowed is False


def test_allow_all_vpc_matches_any_vpc_id() -> None:
    key = compiled(None, {ALLOW_ALL_VPC: "0.0.0.0/0 ::/0"})
    for vpc_id in ("vpc-1", "vpc-anything", ALLOW_ALL_VPC):
        decision = evaluate_network_access(key, None, ip("10.1.2.3"), vpc_id)
        assert decision == AclDecision(allowed=True, level="key", rule="AllowAllVPC:0.0.0.0/0")
    v6 = evaluate_network_access(key, None, ip("fd00::1"), "vpc-1")
    assert v6.rule == "AllowAllVPC:::/0"


def test_allow_all_vpc_still_checks_the_address() -> None:
    key = compiled(None, {ALLOW_ALL_VPC: "10.0.0.0/8"})
    assert evaluate_network_access(key, None, ip("10.0.0.1"), "vpc-9").allowed is True
    assert evaluate_network_access(key, None, ip("172.16.0.1"), "vpc-9").allowed is False


def test_the_request_vpcs_own_rule_is_reported_before_allow_all_vpc() -> None:
    key = compiled(None, {"vpc-1": "10.0.0.0/8", ALLOW_ALL_VPC: "0.0.0.0/0"})
    own = evaluate_network_access(key, None, ip("10.1.2.3"), "vpc-1")
    assert own.rule == "vpc-1:10.0.0.0/8"
    fallback = evaluate_network_access(key, None, ip("172.16.0.1"), "vpc-1")
    assert fallback.rule == "AllowAllVPC:0.0.0.0/0"


def test_an_enabled_policy_without_vpc_rules_denies_all_vpc_traffic() -> None:
    key = compiled("0.0.0.0/0 ::/0")
    assert evaluate_network_access(key, None, ip("10.0.0.1"), "vpc-1").allowed is False


def test_ipv6_sources_match_ipv6_cidrs() -> None:
    key = compiled("2001:db8:aa::/48 2001:db8:bb::7")
    inside = evaluate_network_access(key, None, ip("2001:db8:aa:1::99"), None)
    assert inside == AclDecision(allowed=True, level="key", rule="public:2001:db8:aa::/48")
    single = evaluate_network_access(key, None, ip("2001:db8:bb::7"), None)
    assert single.rule == "public:2001:db8:bb::7/128"
    assert evaluate_network_access(key, None, ip("2001:db8:bb::8"), None).allowed is False


def test_address_families_never_cross_match() -> None:
    v4_only = compiled("0.0.0.0/0")
    v6_only = compiled("::/0")
    assert evaluate_network_access(v4_only, None, ip("2001:db8::1"), None).allowed is False
    assert evaluate_network_access(v6_only, None, ip("203.0.113.7"), None).allowed is False


def test_an_ipv4_mapped_ipv6_source_matches_an_ipv4_rule() -> None:
    key = compiled("203.0.113.0/24")
    decision = evaluate_network_access(key, None, ip("::ffff:203.0.113.7"), None)
    assert decision == AclDecision(allowed=True, level="key", rule="public:203.0.113.0/24")


def test_an_ipv4_mapped_ipv6_source_matches_an_ipv4_vpc_rule() -> None:
    key = compiled(None, {"vpc-1": "10.0.0.0/8"})
    decision = evaluate_network_access(key, None, ip("::ffff:10.0.0.1"), "vpc-1")
    assert decision.rule == "vpc-1:10.0.0.0/8"


def test_a_single_address_rule_matches_only_that_address() -> None:
    key = compiled("203.0.113.7")
    assert evaluate_network_access(key, None, ip("203.0.113.7"), None).rule == (
        "public:203.0.113.7/32"
    )
    assert evaluate_network_access(key, None, ip("203.0.113.6"), None).allowed is False
    assert evaluate_network_access(key, None, ip("203.0.113.8"), None).allowed is False


def test_cidr_boundaries_are_inclusive() -> None:
    key = compiled("203.0.113.0/24")
    assert evaluate_network_access(key, None, ip("203.0.113.0"), None).allowed is True
    assert evaluate_network_access(key, None, ip("203.0.113.255"), None).allowed is True
    assert evaluate_network_access(key, None, ip("203.0.112.255"), None).allowed is False
    assert evaluate_network_access(key, None, ip("203.0.114.0"), None).allowed is False


def test_no_source_address_with_an_enabled_policy_fails_closed() -> None:
    allow_all = compiled("0.0.0.0/0 ::/0", {ALLOW_ALL_VPC: "0.0.0.0/0 ::/0"})
    for vpc_id in (None, "vpc-1"):
        by_key = evaluate_network_access(allow_all, None, None, vpc_id)
        assert by_key == AclDecision(allowed=False, level="key", rule=None)
        by_account = evaluate_network_access(None, allow_all, None, vpc_id)
        assert by_account == AclDecision(allowed=False, level="account", rule=None)


def test_nested_cidrs_report_a_rule_that_contains_the_source() -> None:
    key = compiled("10.0.0.0/8 10.1.0.0/16 10.1.2.0/24 11.0.0.0/8")
    for source in ("10.1.2.3", "10.1.9.9", "10.9.9.9", "11.0.0.1"):
        rule = evaluate_network_access(key, None, ip(source), None).rule
        assert rule is not None
        assert ip(source) in ipaddress.ip_network(rule.removeprefix("public:"))


# --- differential property: CompiledPolicy against a naive reference ----------------------


@st.composite
def networks_and_addresses(
    draw: st.DrawFn,
) -> tuple[list[IpNetwork], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    chosen: list[IpNetwork] = []
    for _ in range(draw(st.integers(0, MAX_ENTRIES_PER_POLICY))):
        kind = draw(st.sampled_from(["v4", "v6", "nested", "nested"]))
        if kind == "nested" and chosen:
            # a sub- or supernet of an existing block, so nesting and repeats are common
            base = draw(st.sampled_from(chosen))
            prefix = draw(st.integers(0, base.max_prefixlen))
            offset = draw(st.integers(0, base.num_addresses - 1))
            address = int(base.network_address) + offset
            if base.version == 4:
                chosen.append(ipaddress.IPv4Network((address, prefix), strict=False))
            else:
                chosen.append(ipaddress.IPv6Network((address, prefix), strict=False))
        else:
            chosen.append(draw(ipv4_networks if kind == "v4" else ipv6_networks))
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for network in chosen[:10]:
        first, last = int(network.network_address), int(network.broadcast_address)
        address_type = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
        top = 2**network.max_prefixlen - 1
        for value in (first, last, first - 1, last + 1, draw(st.integers(first, last))):
            if 0 <= value <= top:
                addresses.append(address_type(value))
    addresses += draw(
        st.lists(st.ip_addresses(v=4) | st.ip_addresses(v=6), min_size=1, max_size=10)
    )
    return chosen, addresses


@settings(max_examples=150, deadline=None)
@given(networks_and_addresses())
def test_compiled_public_match_agrees_with_a_naive_reference(
    case: tuple[list[IpNetwork], list[ipaddress.IPv4Address | ipaddress.IPv6Address]],
) -> None:
    chosen, addresses = case
    written = policy([str(network) for network in chosen])
    compiled_policy = CompiledPolicy(written)
    for address in addresses:
        expected = any(address in network for network in chosen)
        rule = compiled_policy.match(address, None)
        assert (rule is not None) == expected, (address, rule)
        if rule is not None:
            assert rule.startswith("public:")
            cidr = rule.removeprefix("public:")
            assert cidr in (written.public or ())
            assert address in ipaddress.ip_network(cidr)


@settings(max_examples=50, deadline=None)
@given(networks_and_addresses(), vpc_ids)
def test_compiled_vpc_match_agrees_with_a_naive_reference(
    case: tuple[list[IpNetwork], list[ipaddress.IPv4Address | ipaddress.IPv6Address]],
    vpc_id: str,
) -> None:
    chosen, addresses = case
    compiled_policy = CompiledPolicy(policy(None, {vpc_id: [str(n) for n in chosen]}))
    for address in addresses:
        expected = any(address in network for network in chosen)
        rule = compiled_policy.match(address, vpc_id)
        assert (rule is not None) == expected, (address, rule)
        if rule is not None:
            assert address in ipaddress.ip_network(rule.removeprefix(f"{vpc_id}:"))
        assert compiled_policy.match(address, None) is None


# --- parse_source_ip -----------------------------------------------------------------------------


def test_parse_source_ip_reads_ipv4() -> None:
    assert parse_source_ip("203.0.113.7") == ipaddress.IPv4Address("203.0.113.7")


def test_parse_source_ip_reads_ipv6() -> None:
    assert parse_source_ip("2001:DB8::7") == ipaddress.IPv6Address("2001:db8::7")


def test_parse_source_ip_turns_an_ipv4_mapped_ipv6_address_into_ipv4() -> None:
    parsed = parse_source_ip("::ffff:203.0.113.7")
    assert parsed == ipaddress.IPv4Address("203.0.113.7")
    assert parsed.version == 4


def test_parse_source_ip_keeps_other_ipv6_forms_as_ipv6() -> None:
    # 6to4 and the deprecated IPv4-compatible form are not IPv4-mapped.
    assert parse_source_ip("2002:cb00:7107::1").version == 6
    assert parse_source_ip("::203.0.113.7").version == 6


def test_parse_source_ip_trims_whitespace() -> None:
    assert parse_source_ip("  203.0.113.7\n") == ipaddress.IPv4Address("203.0.113.7")
    assert parse_source_ip("\t2001:db8::7 ") == ipaddress.IPv6Address("2001:db8::7")


@pytest.mark.parametrize(
    "text", ["", "   ", "garbage", "203.0.113.256", "203.0.113.0/24", "2001:::7", "x" * 10_000]
)
def test_parse_source_ip_refuses_garbage_naming_source_ip(text: str) -> None:
    with pytest.raises(AliakError) as caught:
        parse_source_ip(text)
    error = caught.value
    assert isinstance(error, InvalidParameter)
    assert error.code == "InvalidParameter"
    assert error.parameter == "source_ip"
    assert '"source_ip"' in error.message
    assert len(str(error)) < 300


# --- normalize_ip / normalize_network: the one form of an address -----------------------------
#
# A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d, a proxy may write a zone id
# or upper-case hex; trusted proxies, X-Forwarded-For and the ACL must all read one form.

ipv4_addresses = st.ip_addresses(v=4)
ipv6_addresses = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None)
zones = st.sampled_from(["eth0", "1", "en0", "lo", "wlp3s0"])


def mapped_forms(address: ipaddress.IPv4Address) -> list[str]:
    """Every way an IPv4-mapped IPv6 text can spell ``address``."""
    high, low = int(address) >> 16, int(address) & 0xFFFF
    return [
        f"::ffff:{address}",
        f"::FFFF:{address}",
        f"0:0:0:0:0:ffff:{address}",
        f"0000:0000:0000:0000:0000:FFFF:{address}",
        f"::ffff:{high:x}:{low:x}",
        f"::FFFF:{high:X}:{low:04X}",
        ipaddress.IPv6Address(f"::ffff:{address}").exploded,
    ]


@given(ipv4_addresses, st.data())
def test_every_spelling_of_an_ipv4_address_normalises_to_it(
    address: ipaddress.IPv4Address, data: st.DataObject
) -> None:
    text = data.draw(st.sampled_from([str(address), *mapped_forms(address)]))
    if ":" in text and data.draw(st.booleans()):
        text += "%" + data.draw(zones)
    text = (
        data.draw(st.sampled_from(["", " ", "\t"])) + text + data.draw(st.sampled_from(["", " "]))
    )
    normal = normalize_ip(text)
    assert normal == address
    assert normal.version == 4
    assert str(normal) == str(address)
    assert parse_source_ip(text) == address


@given(ipv6_addresses, st.data())
def test_every_spelling_of_an_ipv6_address_normalises_to_its_compressed_form(
    address: ipaddress.IPv6Address, data: st.DataObject
) -> None:
    text = data.draw(
        st.sampled_from(
            [str(address), address.exploded, address.exploded.upper(), str(address).upper()]
        )
    )
    if data.draw(st.booleans()):
        text += "%" + data.draw(zones)
    normal = normalize_ip(text)
    assert normal == address  # IPv6Address equality counts a zone: it must be gone
    assert str(normal) == str(address)
    assert "%" not in str(normal)
    assert normal.version == 6


def test_a_zone_id_is_dropped_and_a_mapped_address_with_one_is_ipv4() -> None:
    assert str(normalize_ip("fe80::1%eth0")) == "fe80::1"
    assert normalize_ip("FE80::1%25") == ipaddress.IPv6Address("fe80::1")
    assert normalize_ip("::ffff:203.0.113.7%eth0") == ipaddress.IPv4Address("203.0.113.7")
    assert str(parse_source_ip("fe80::1%eth0")) == "fe80::1"


@pytest.mark.parametrize(
    "text",
    [
        "[2001:db8::1]",  # brackets belong to URLs, not addresses
        "[2001:db8::1]:443",
        "203.0.113.7:80",
        "[::ffff:203.0.113.7]",
        "203.0.113.7%eth0",  # IPv4 has no zones
        "fe80::1%",  # an empty zone
        "%eth0",
        "fe80::1/64",
        "::ffff:203.0.113.256",
        "unknown",
        "",
    ],
)
def test_what_is_not_an_address_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        normalize_ip(text, field="x-forwarded-for")
    assert caught.value.parameter == "x-forwarded-for"
    with pytest.raises(InvalidParameter) as caught:
        parse_source_ip(text)
    assert caught.value.parameter == "source_ip"


def test_embedded_ipv4_forms_other_than_mapped_stay_ipv6() -> None:
    for text in ("::203.0.113.7", "64:ff9b::203.0.113.7", "2002:cb00:7107::1", "::fffe:1.2.3.4"):
        assert normalize_ip(text).version == 6, text


@given(st.ip_addresses(v=4).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 32))))
def test_a_mapped_network_is_the_ipv4_network_it_maps(
    drawn: tuple[ipaddress.IPv4Address, int],
) -> None:
    address, prefix = drawn
    network = ipaddress.IPv4Network((address, prefix), strict=False)
    mapped = f"::ffff:{network.network_address}/{96 + prefix}"
    assert normalize_network(mapped) == network
    assert normalize_network(mapped.upper()) == network
    assert normalize_network(str(network)) == network


def test_normalize_network_drops_zones_keeps_wider_ipv6_blocks_and_checks_host_bits() -> None:
    assert normalize_network("fe80::%eth0/64") == ipaddress.IPv6Network("fe80::/64")
    assert normalize_network("::fffe:0:0/95").version == 6  # wider than the mapped block
    assert normalize_network("::ffff:0:0/96") == ipaddress.IPv4Network("0.0.0.0/0")
    with pytest.raises(InvalidParameter):
        normalize_network("::ffff:10.0.0.1/104")
    assert normalize_network("::ffff:10.0.0.1/104", strict=False) == ipaddress.IPv4Network(
        "10.0.0.0/8"
    )
    with pytest.raises(InvalidParameter) as caught:
        normalize_network("[::1]/128", field="trusted_proxies")
    assert caught.value.parameter == "trusted_proxies"


def test_a_policy_entry_in_mapped_form_is_the_ipv4_rule_and_matches_every_spelling() -> None:
    # A mapped entry used to be stored as an IPv6 block no normalised source could match.
    assert policy(["::ffff:203.0.113.0/120", "203.0.113.0/24"]).public == ("203.0.113.0/24",)
    assert policy(["::FFFF:203.0.113.7"]).public == ("203.0.113.7/32",)
    assert policy(None, {"vpc-1": ["::ffff:10.0.0.0/104"]}).vpcs == (("vpc-1", ("10.0.0.0/8",)),)
    key = compiled("::ffff:203.0.113.0/120")
    for text in ("203.0.113.7", "::ffff:203.0.113.7", "::FFFF:cb00:7107"):
        decision = evaluate_network_access(key, None, ip(text), None)
        assert decision == AclDecision(allowed=True, level="key", rule="public:203.0.113.0/24")
