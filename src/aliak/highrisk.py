"""What a leak-restricted key may not call (spec ``verification.md`` §7.4), decided from
what the *server* knows.

A value module. Two questions, kept apart:

- **Which service is this request for?** The caller chooses the ``host`` (it is signed,
  but signed by the caller), so it names a service only through a mapping the server
  owns: the verifier's ``service_name``, or ``host_services`` (an exact host table, or
  :class:`AlibabaEndpoints` for Alibaba's endpoint forms of the services a server
  fronts). A host the server does not know names no service (``None``).
- **Is the operation high-risk?** :class:`HighRiskActions` holds (service, version,
  action) patterns, Alibaba's published table by default (it "is subject to change",
  so servers pass their own, or a predicate). With the service unknown, the action
  alone decides, failing safe: a pattern applies whatever its service, so an action
  named anywhere in the table is high-risk on any host, and a service-wide pattern
  ("every RAM operation") makes every action high-risk -- a leak-restricted key then
  calls nothing until the server says which service it is. Versions are chosen by the
  caller too, so they are matched only with ``match_version=True`` (for a server that
  refuses versions it does not serve).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "DEFAULT_HIGH_RISK_ACTIONS",
    "AlibabaEndpoints",
    "HighRiskActions",
    "HighRiskPredicate",
    "HostServices",
    "service_of_host",
]

# §7.4: the published list of operations blocked for a leak-restricted key, as
# (service, version, action); "*" matches anything. Configurable: the list "is subject
# to change".
DEFAULT_HIGH_RISK_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("ram", "2015-05-01", "*"),
    ("ims", "2019-08-15", "*"),
    *(
        ("ecs", "2014-05-26", action)
        for action in (
            "RunInstances", "CreateInstance", "CreateAutoProvisioningGroup", "StartInstance",
            "StartInstances", "RunCommand", "InvokeCommand", "CreateCommand", "DeleteInstance",
            "DeleteInstances", "DeleteSnapshot", "DeleteSnapshotGroup", "DeleteImage",
        )
    ),
    ("eci", "2018-08-08", "CreateContainerGroup"),
    ("eci", "2018-08-08", "DeleteContainerGroup"),
    *(
        ("dysmsapi", "2017-05-25", action)
        for action in ("SendSms", "SendBatchSms", "AddSmsTemplate", "CreateSmsTemplate")
    ),
    *(
        ("rds", "2014-08-15", action)
        for action in (
            "DeleteDBInstance", "DestroyDBInstance", "DeleteDatabase", "DeleteBackup",
            "ModifyBackupPolicy", "CreateAccount", "ResetAccountPassword",
            "GrantAccountPrivilege",
        )
    ),
    *(
        ("alidns", "2015-01-09", action)
        for action in (
            "DeleteDomain", "AddDomainRecord", "UpdateDomainRecord", "DeleteDomainRecord",
            "SetDomainRecordStatus",
        )
    ),
    ("business", "2017-12-14", "RefundInstance"),
)  # fmt: skip


# A server's own rule: (service or None when unknown, version, action) -> high-risk?
HighRiskPredicate = Callable[[str | None, str | None, str | None], bool]


class HighRiskActions:
    """(service, version, action) patterns with ``*`` wildcards.

    ``matches`` takes the service as the server determined it (``None``: unknown); see
    the module docstring for what an unknown service and the version mean.
    """

    __slots__ = ("_by_action", "_match_version", "_service_wide")

    def __init__(
        self,
        patterns: Iterable[tuple[str, str, str]] = DEFAULT_HIGH_RISK_ACTIONS,
        *,
        match_version: bool = False,
    ) -> None:
        self._match_version = match_version
        # action -> [(service, version)], and the patterns that cover every action.
        self._by_action: dict[str, list[tuple[str, str]]] = {}
        self._service_wide: list[tuple[str, str]] = []
        for service, version, action in patterns:
            where = (service.lower(), version)
            if action == "*":
                self._service_wide.append(where)
            else:
                self._by_action.setdefault(action, []).append(where)

    @classmethod
    def of_actions(cls, actions: Iterable[str]) -> HighRiskActions:
        """A self-hosted API's own list: these action names, on any service."""
        return cls(("*", "*", action) for action in actions)

    def _version_fits(self, pattern: str, version: str | None) -> bool:
        return not self._match_version or pattern in ("*", version)

    def matches(self, service: str | None, version: str | None, action: str | None) -> bool:
        """Whether (service, version, action) is high-risk; ``service`` ``None`` when the
        server cannot tell (then every pattern's service matches: fail safe)."""
        if service is not None:
            service = service.lower()  # the patterns are stored lower-case
        candidates = self._service_wide
        if action is not None:
            candidates = [*self._by_action.get(action, ()), *candidates]
        return any(
            (service is None or pattern_service in ("*", service))
            and self._version_fits(pattern_version, version)
            for pattern_service, pattern_version in candidates
        )


# -- which service a host names, by the server's own mapping ----------------------------

# How a server maps the Host it was sent to a service: an exact table, or a function.
HostServices = Mapping[str, str] | Callable[[str], str | None]

_REGION = r"[a-z]{2}(?:-[a-z0-9]+)+"
_ALIBABA_ENDPOINT = re.compile(
    # ecs.aliyuncs.com, ecs.cn-hangzhou.aliyuncs.com, ecs-vpc.cn-hangzhou.aliyuncs.com,
    # ecs-internal.aliyuncs.com, ecs.vpc-proxy.aliyuncs.com, ecs-cn-hangzhou.aliyuncs.com,
    # ecs-cn-hangzhou-internal.aliyuncs.com, ecs.cn-hangzhou-internal.aliyuncs.com
    rf"(?P<service>[a-z][a-z0-9]*)"
    rf"(?:-vpc|-internal|-share|-(?:{_REGION})(?:-internal|-int-vpc)?)?"
    rf"(?:\.vpc-proxy|\.{_REGION}(?:-internal)?)?"
    rf"\.aliyuncs\.com"
)


class AlibabaEndpoints:
    """The Alibaba endpoint forms (public, regional, VPC, internal) of the services a
    server fronts, each mapping to its service: ``ecs.cn-hangzhou.aliyuncs.com`` and
    ``ecs-vpc.cn-hangzhou.aliyuncs.com`` are both ``ecs``. A host of another form, or of
    a service not listed, names none. Use it only where requests are routed to services
    by these same names."""

    __slots__ = ("_services",)

    def __init__(self, services: Iterable[str]) -> None:
        self._services = frozenset(service.lower() for service in services)

    def __repr__(self) -> str:
        return f"AlibabaEndpoints({sorted(self._services)})"

    def __call__(self, host: str) -> str | None:
        match = _ALIBABA_ENDPOINT.fullmatch(host)
        if match is None or match.group("service") not in self._services:
            return None
        return match.group("service")


def service_of_host(host: str, services: HostServices) -> str | None:
    """The service ``services`` maps ``host`` to (port, trailing dot and case ignored),
    or ``None`` when the server does not know the host."""
    name = _host_name(host)
    found = services(name) if callable(services) else services.get(name)
    return None if found is None else found.lower()


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port names no service anyway; keep it whole
        return host.partition("]")[0] + "]"
    return host.partition(":")[0].rstrip(".")
