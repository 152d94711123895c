"""DESIGN "Principles" 3, enforced: layers point down, and integrations use only the
public API (which therefore exports what they and users need).

Every module under ``src/aliak`` is parsed with :mod:`ast`, not imported (an import
inside a function or under ``if TYPE_CHECKING`` counts the same), and put in one layer.
A module that fits none fails the test: decide its layer and list it here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import aliak
from aliak import errors, timestamps
from aliak.storage import protocols

SRC = Path(__file__).resolve().parent.parent / "src"

# Pure: plain values in, plain values out; no I/O, no store. highrisk holds the high-risk
# action tables; storage.lifecycle (DESIGN's target) the domain rules every backend calls.
VALUES = frozenset({
    "aliak.acl",
    "aliak.algorithms",
    "aliak.authorization",
    "aliak.canonical",
    "aliak.credentials",
    "aliak.encoding",
    "aliak.errors",
    "aliak.highrisk",
    "aliak.keyring",
    "aliak.legacy",
    "aliak.model",
    "aliak.request",
    "aliak.roles",
    "aliak.storage.lifecycle",
    "aliak.timestamps",
})  # fmt: skip
# aliak.metrics: the hook a verifier reports through (its Protocol and a no-op).
PORTS = frozenset({"aliak.metrics", "aliak.storage.protocols"})
# The verify flow may become a package (DESIGN: "split into verifier/"): aliak.verifier.*
# is a service too. aliak.requestlog: the request event and its sinks (a logger, and
# SQLite/PostgreSQL tables of their own, on connections of their own: no store).
SERVICES = frozenset({
    "aliak.keys",
    "aliak.requestlog",
    "aliak.schemes",
    "aliak.sealing",
    "aliak.signer",
    "aliak.sts",
    "aliak.verifier",
})  # fmt: skip
# Storage backends and their helpers, the CLI, and the demo it runs.
ADAPTER_PACKAGES = ("aliak.cli", "aliak.storage")
ADAPTERS = frozenset({"aliak.__main__", "aliak.demo"})
INTEGRATIONS = "aliak.integrations"
FACADE = "aliak"  # __init__.py: re-exports from every layer, backends included
# What an integration may import: the public API and the helpers the integrations share.
INTEGRATION_MAY_IMPORT = frozenset({FACADE, "aliak.integrations.http"})

# Known breaks of the rules, each with its reason; the test fails once one is fixed, so
# that this list only shrinks. (Empty: the keyring value moved below the ports.)
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted((SRC / "aliak").rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def layer(name: str) -> str:
    # The credentials package (DESIGN's target ``credentials/``) is a value module split in
    # parts: its providers import only values and reach files and sockets through the
    # standard library alone, when asked for a credential.
    if name in VALUES or name.startswith("aliak.credentials."):
        return "value"
    if name in PORTS:
        return "port"
    if name in SERVICES or name.startswith("aliak.verifier."):
        return "service"
    if name == FACADE:
        return "facade"
    if name == INTEGRATIONS or name.startswith(INTEGRATIONS + "."):
        return "integration"
    if name in ADAPTERS or name.startswith(ADAPTER_PACKAGES):
        return "adapter"
    raise AssertionError(f"{name} is in no layer: decide which and list it in {__file__}")


def imported(name: str) -> Iterator[str]:
    """The aliak modules ``name`` imports, including under ``if TYPE_CHECKING``: a type is
    a dependency too. ``from aliak.x import y`` names ``aliak.x.y`` when that is a module,
    else ``aliak.x``; ``from aliak import Request`` names the facade."""
    tree = ast.parse(MODULES[name].read_text("utf-8"), filename=str(MODULES[name]))
    package = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            targets = [target for target in submodules if target in MODULES] or [source]
        else:
            continue
        yield from (target for target in targets if target.split(".")[0] == "aliak")


def allowed(importer: str, target: str) -> bool:
    kind, target_kind = layer(importer), layer(target)
    if kind == "value":
        return target_kind == "value"
    if kind == "port":
        return target_kind in {"value", "port"}
    if kind == "service":
        return target_kind in {"value", "port", "service"}
    if kind == "integration":
        return target in INTEGRATION_MAY_IMPORT or target == INTEGRATIONS
    return True  # adapters and the facade sit on top


EDGES = sorted({(name, target) for name in MODULES for target in imported(name)})


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        layer(name)


def test_the_module_lists_name_only_modules_that_can_exist() -> None:
    # A renamed module must not leave a stale name here that silently checks nothing.
    listed = VALUES | PORTS | SERVICES | ADAPTERS
    assert listed <= set(MODULES)


@pytest.mark.parametrize(("importer", "target"), EDGES, ids=[f"{a}->{b}" for a, b in EDGES])
def test_imports_point_down(importer: str, target: str) -> None:
    if (importer, target) in KNOWN_VIOLATIONS:
        pytest.xfail(KNOWN_VIOLATIONS[importer, target])
    assert allowed(importer, target), (
        f"{importer} ({layer(importer)}) imports {target} ({layer(target)}): "
        "DESIGN Principles 3 -- layers point down, integrations use only the public API"
    )


def test_the_known_violations_still_exist() -> None:
    for edge in KNOWN_VIOLATIONS:
        assert edge in EDGES, f"{edge} is fixed: remove it from KNOWN_VIOLATIONS"
        assert not allowed(*edge), f"{edge} is allowed now: remove it from KNOWN_VIOLATIONS"


def test_only_the_top_imports_the_facade() -> None:
    # aliak/__init__ imports the storage backends; a value or service importing it would
    # depend on them (and on an import cycle) without saying so.
    for importer, target in EDGES:
        if target == FACADE:
            assert layer(importer) in {"integration", "adapter"}, importer


def test_the_rules_catch_what_they_are_for() -> None:
    assert not allowed("aliak.canonical", "aliak.signer")
    assert not allowed("aliak.request", "aliak.storage.protocols")
    assert not allowed("aliak.storage.protocols", "aliak.keys")
    assert not allowed("aliak.verifier", "aliak.storage.sqlite")
    assert not allowed("aliak.keys", "aliak.integrations.http")
    assert not allowed("aliak.integrations.asgi", "aliak.integrations.wsgi")
    assert not allowed("aliak.integrations.wsgi", "aliak.errors")
    assert allowed("aliak.integrations.asgi", "aliak.integrations.http")
    assert allowed("aliak.verifier", "aliak.storage.protocols")


def test_the_public_api_exports_what_users_catch_and_implement() -> None:
    # Integrations may import only the facade, so what they (and users) catch or
    # implement must be there: every error class, every store port, the clock type.
    exported = set(aliak.__all__)
    assert set(errors.__all__) <= exported
    assert set(protocols.__all__) <= exported
    assert "Clock" in exported
    assert aliak.Clock is timestamps.Clock
    assert all(hasattr(aliak, name) for name in aliak.__all__)
    assert list(aliak.__all__) == sorted(aliak.__all__, key=_isort_key)


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest.
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name
