"""The high-risk operations a leak-restricted key may not call (spec ``verification.md`` §7.4).

A value module: the published table as (service, version, action) patterns, and the
matcher the verifier asks. The list "is subject to change", so servers pass their own.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEFAULT_HIGH_RISK_ACTIONS", "HighRiskActions"]

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


class HighRiskActions:
    """(service, version, action) patterns with ``*`` wildcards, matched in O(1)."""

    __slots__ = ("_exact", "_patterns")

    def __init__(self, patterns: Iterable[tuple[str, str, str]] = DEFAULT_HIGH_RISK_ACTIONS):
        self._exact: set[tuple[str, str, str]] = set()
        self._patterns: set[tuple[str, str, str]] = set()
        for service, version, action in patterns:
            triple = (service.lower(), version, action)
            target = self._patterns if "*" in triple else self._exact
            target.add(triple)

    def matches(self, service: str, version: str | None, action: str | None) -> bool:
        service = service.lower()
        version = version or ""
        action = action or ""
        if (service, version, action) in self._exact:
            return True
        return any(
            (s in ("*", service)) and (v in ("*", version)) and (a in ("*", action))
            for s, v, a in self._patterns
        )
