"""The docs cannot rot: every Python block in docs/ runs, and the error table is true."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from aliak import errors

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", page.read_text("utf-8"), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_python_block_of_the_page_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALIAK_MASTER_KEY", raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, block in enumerate(python_blocks(page), start=1):
            exec(compile(block, f"{page.name} block {number}", "exec"), namespace)


def test_the_docs_cover_every_required_topic() -> None:
    names = {page.name for page in PAGES}
    assert {
        "index.md", "signing.md", "verifying.md", "key-lifecycle.md", "storage.md",
        "security.md", "errors.md", "benchmarks.md", "schemes.md", "operating.md",
    } <= names  # fmt: skip
    assert all(python_blocks(DOCS / name) for name in ("index.md", "signing.md", "verifying.md"))


def error_classes() -> dict[str, type[errors.AliakError]]:
    return {
        cls.code: cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.AliakError)
    }


def test_the_error_table_matches_the_error_classes() -> None:
    rows = re.findall(
        r"^\| `([^`]+)` \| (\d{3}) \| (.+?) \|$", (DOCS / "errors.md").read_text(), re.M
    )
    classes = error_classes()
    assert {code for code, _, _ in rows} == set(classes)
    for code, status, message in rows:
        cls = classes[code]
        assert cls.http_status == int(status), code
        if "&lt;" not in message and "(" not in message:
            assert cls.default_message == message, code
