"""Network ACLs: source-IP restriction of AccessKeys (spec ``verification.md`` §6).

A :class:`NetworkPolicy` is what an operator writes, validated against the documented
limits when it is built. :func:`compile_policy` turns it into sorted, disjoint address
intervals per IP version, so a request is checked with a binary search: the cost does
not grow with the number of keys, and only logarithmically with the entries.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

import attrs

from aliak.errors import InvalidParameter, LimitExceeded

__all__ = [
    "ALLOW_ALL_VPC",
    "MAX_ENTRIES_PER_POLICY",
    "MAX_POLICIES_PER_TARGET",
    "AclDecision",
    "CompiledPolicy",
    "NetworkPolicy",
    "compile_policy",
    "evaluate_network_access",
    "normalize_ip",
    "normalize_network",
    "parse_source_ip",
]

ALLOW_ALL_VPC = "AllowAllVPC"
MAX_POLICIES_PER_TARGET = 8  # the public policy and every VPC policy count
MAX_ENTRIES_PER_POLICY = 50

IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_entry_separators = re.compile(r"[\s,;]+")
_is_vpc_id = re.compile(r"[A-Za-z0-9._\-]{1,128}").fullmatch


def _parse_entries(field: str, entries: Iterable[str] | str) -> tuple[str, ...]:
    # The console separates entries by spaces, commas or semicolons; accept the same.
    items = _entry_separators.split(entries.strip()) if isinstance(entries, str) else entries
    normalised: list[str] = []
    for entry in items:
        if not isinstance(entry, str):
            raise TypeError(f"{field} entries must be str, not {type(entry).__name__}")
        if not entry:
            continue
        # strict: a CIDR with host bits set is a typo more often than an intent. An
        # IPv4-mapped entry becomes the IPv4 block: addresses are compared in that form.
        network = normalize_network(entry, field=field, strict=True)
        normalised.append(str(network))
    distinct = tuple(dict.fromkeys(normalised))
    if len(distinct) > MAX_ENTRIES_PER_POLICY:
        raise LimitExceeded(
            "NetworkPolicy",
            detail=f"{field} has {len(distinct)} entries; at most "
            f"{MAX_ENTRIES_PER_POLICY} addresses or CIDR blocks per policy",
        )
    return distinct


def _to_public(value: Iterable[str] | str | None) -> tuple[str, ...] | None:
    return None if value is None else _parse_entries("public", value)


def _to_vpcs(
    value: Mapping[str, Iterable[str] | str] | None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if isinstance(value, tuple):  # the stored form: ((vpc_id, entries), ...)
        if not all(isinstance(rule, tuple) and len(rule) == 2 for rule in value):
            raise TypeError("vpcs in tuple form holds (vpc_id, entries) pairs")
        if len({rule[0] for rule in value}) != len(value):
            raise TypeError("vpcs in tuple form names a VPC twice")
        value = dict(value)
    if not isinstance(value, Mapping):
        raise TypeError("vpcs maps a VPC id to its addresses or CIDR blocks")
    rules = []
    for vpc_id, entries in value.items():
        if not isinstance(vpc_id, str) or _is_vpc_id(vpc_id) is None:
            raise InvalidParameter("vpcs", detail="a VPC id is 1-128 characters of [A-Za-z0-9._-]")
        rules.append((vpc_id, _parse_entries(f"vpcs[{vpc_id!r}]", entries)))
    return tuple(sorted(rules))


@attrs.frozen
class NetworkPolicy:
    """A network access policy for an account or one AccessKey.

    ``public``: the public-network rule, addresses or CIDRs (IPv4 and IPv6); ``None``
    means no public rule, so an enabled policy denies all public traffic. ``vpcs``: VPC id
    -> addresses or CIDRs allowed inside that VPC (``AllowAllVPC`` matches any VPC).
    ``enabled=False`` keeps the policy but does not apply it. Limits (§6): at most 8
    policies per target (the public rule counts as one), 50 entries per policy.
    """

    public: tuple[str, ...] | None = attrs.field(default=None, converter=_to_public)
    vpcs: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(default=(), converter=_to_vpcs)
    enabled: bool = True

    def __attrs_post_init__(self) -> None:
        count = len(self.vpcs) + (self.public is not None)
        if count > MAX_POLICIES_PER_TARGET:
            raise LimitExceeded(
                "NetworkPolicy",
                detail=f"{count} policies; at most {MAX_POLICIES_PER_TARGET} per target",
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "public": None if self.public is None else list(self.public),
            "vpcs": {vpc_id: list(entries) for vpc_id, entries in self.vpcs},
            "enabled": self.enabled,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> NetworkPolicy:
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidParameter("enabled", detail="true or false")
        return cls(
            public=data.get("public"),  # type: ignore[arg-type]
            vpcs=data.get("vpcs"),  # type: ignore[arg-type]
            enabled=enabled,
        )


class _Ranges:
    """Disjoint address intervals of one IP version, sorted; membership by bisection."""

    __slots__ = ("_ends", "_labels", "_starts")

    def __init__(self, networks: Iterable[IpNetwork]) -> None:
        # CIDR blocks are nested or disjoint; drop the nested ones and what is left is
        # disjoint and sortable by start.
        ordered = sorted(networks, key=lambda n: (int(n.network_address), -n.num_addresses))
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._labels: list[str] = []
        for network in ordered:
            start = int(network.network_address)
            end = int(network.broadcast_address)
            if self._ends and start <= self._ends[-1]:
                continue
            self._starts.append(start)
            self._ends.append(end)
            self._labels.append(str(network))

    def find(self, address: int) -> str | None:
        position = bisect.bisect_right(self._starts, address) - 1
        if position >= 0 and address <= self._ends[position]:
            return self._labels[position]
        return None


class _RuleSet:
    __slots__ = ("_v4", "_v6")

    def __init__(self, entries: Iterable[str]) -> None:
        networks = [ipaddress.ip_network(entry) for entry in entries]
        self._v4 = _Ranges(n for n in networks if n.version == 4)
        self._v6 = _Ranges(n for n in networks if n.version == 6)

    def find(self, address: IpAddress) -> str | None:
        ranges = self._v4 if address.version == 4 else self._v6
        return ranges.find(int(address))


class CompiledPolicy:
    """A :class:`NetworkPolicy` ready to answer requests."""

    __slots__ = ("_public", "_vpcs", "enabled")

    def __init__(self, policy: NetworkPolicy) -> None:
        self.enabled = policy.enabled
        self._public = None if policy.public is None else _RuleSet(policy.public)
        self._vpcs = {vpc_id: _RuleSet(entries) for vpc_id, entries in policy.vpcs}

    def match(self, address: IpAddress, vpc_id: str | None) -> str | None:
        """The rule that allows ``address``, as ``public:<cidr>`` or ``<vpc>:<cidr>``."""
        if vpc_id is None:
            found = None if self._public is None else self._public.find(address)
            return None if found is None else f"public:{found}"
        for candidate in (vpc_id, ALLOW_ALL_VPC):
            rules = self._vpcs.get(candidate)
            if rules is not None and (found := rules.find(address)) is not None:
                return f"{candidate}:{found}"
        return None


def compile_policy(policy: NetworkPolicy | None) -> CompiledPolicy | None:
    return None if policy is None else CompiledPolicy(policy)


@attrs.frozen
class AclDecision:
    """The outcome of the network check: allowed or not, by which level and rule."""

    allowed: bool
    level: Literal["key", "account"] | None
    rule: str | None


_NO_POLICY = AclDecision(allowed=True, level=None, rule=None)


def evaluate_network_access(
    key_policy: CompiledPolicy | None,
    account_policy: CompiledPolicy | None,
    address: IpAddress | None,
    vpc_id: str | None,
) -> AclDecision:
    """§6 evaluation: an enabled key-level policy replaces the account-level one; a
    disabled key-level policy counts as absent; with neither enabled, allow."""
    level: Literal["key", "account"]
    if key_policy is not None and key_policy.enabled:
        policy, level = key_policy, "key"
    elif account_policy is not None and account_policy.enabled:
        policy, level = account_policy, "account"
    else:
        return _NO_POLICY
    if address is None:  # no source address to check: fail closed
        return AclDecision(allowed=False, level=level, rule=None)
    rule = policy.match(address, vpc_id)
    return AclDecision(allowed=rule is not None, level=level, rule=rule)


# ---------------------------------------------------------------------------------------
# The one form of an address
# ---------------------------------------------------------------------------------------


def normalize_ip(text: str, *, field: str = "address") -> IpAddress:
    """An address in the one form every check compares: what a socket, a proxy's
    ``X-Forwarded-For`` and an operator write all come to this.

    - surrounding whitespace is trimmed;
    - an IPv6 zone id (``fe80::1%eth0``) is dropped: it names an interface of the host
      that wrote it, not a different address;
    - an IPv4-mapped IPv6 address (``::ffff:203.0.113.7``, as a dual-stack socket bound
      to ``::`` reports an IPv4 peer) is the IPv4 address;
    - ``str()`` of the result is the canonical text (lower-case, compressed IPv6).

    Other IPv6 forms that embed an IPv4 address (6to4, NAT64, the deprecated
    IPv4-compatible ``::a.b.c.d``) stay IPv6: other hosts may answer there. Brackets and
    ports are not part of an address and are refused. Raises :class:`InvalidParameter`
    naming ``field`` when ``text`` is not an address.
    """
    # Clients come back from the same few addresses, and parsing one costs more than the
    # rest of the ACL check: remember recent ones (bounded).
    found = _normalized.get(text)
    if found is not None:
        return found
    address = _normalize_ip(text, field)
    if len(_normalized) >= _MAX_NORMALIZED:
        _normalized.clear()
    _normalized[text] = address
    return address


_MAX_NORMALIZED = 4096
_normalized: dict[str, IpAddress] = {}


def _normalize_ip(text: str, field: str) -> IpAddress:
    if not isinstance(text, str):
        raise TypeError(f"{field} must be str, not {type(text).__name__}")
    try:
        address = ipaddress.ip_address(_without_zone(text.strip()))
    except ValueError:
        raise InvalidParameter(field, detail="not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalize_network(text: str, *, field: str = "network", strict: bool = True) -> IpNetwork:
    """An address or CIDR block in the form :func:`normalize_ip` gives addresses: a zone
    id dropped, a block inside ``::ffff:0:0/96`` the IPv4 block it maps (so that
    ``::ffff:10.0.0.0/104`` is ``10.0.0.0/8``). ``strict``: refuse host bits set.

    Raises :class:`InvalidParameter` naming ``field`` when ``text`` is not one.
    """
    if not isinstance(text, str):
        raise TypeError(f"{field} entries must be str, not {type(text).__name__}")
    try:
        network = ipaddress.ip_network(_without_zone(text.strip()), strict=strict)
    except ValueError:
        raise InvalidParameter(
            field, detail=f"{text[:60]!r} is not an IPv4/IPv6 address or CIDR block"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _without_zone(text: str) -> str:
    """``fe80::1%eth0`` -> ``fe80::1`` (and ``fe80::%eth0/64`` -> ``fe80::/64``). Only an
    IPv6 address has a zone; anything else with a ``%`` is left to fail parsing."""
    if "%" not in text:
        return text
    address, _, rest = text.partition("%")
    zone, slash, prefix = rest.partition("/")
    if ":" not in address or not zone or "%" in zone:
        return text
    return address + slash + prefix


def parse_source_ip(text: str) -> IpAddress:
    """The client address a network ACL is checked against: :func:`normalize_ip`, with
    :class:`InvalidParameter` naming ``source_ip`` when it does not parse."""
    return normalize_ip(text, field="source_ip")
