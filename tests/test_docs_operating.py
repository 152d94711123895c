"""The operating page cannot rot: every ```sh block of docs/operating.md runs, and the
output the page shows is what the commands print.

How the page is run:

- Each ```sh block runs in a process of its own, ``bash -euo pipefail``, in page order,
  every block of a run in one fresh directory (files carry from block to block;
  environment variables do not: a block exports what it needs). It must exit 0: a
  command shown failing is written ``... || echo "exit status: $?"``.
- The environment is clean: ``PATH`` starts with this interpreter's ``bin`` directory
  (the venv's ``aliak`` and ``python``), ``HOME`` is the run's directory, ``LANG``/``TZ``
  are fixed, ``LOGNAME``/``USER`` are ``operator`` (so the default actor reads
  ``cli:operator``), and no ``ALIAK_*`` or ``ALIBABA_CLOUD_*`` variable is inherited.
- A block under ``<!-- needs: postgres redis -->`` (the line before its fence) needs those
  servers. Such blocks run in their own directory, after one another, and are skipped
  only when ``ALIAK_TEST_POSTGRES_DSN`` / ``ALIAK_TEST_REDIS_URL`` are absent (CI sets
  both, through ``.ci/services``). The page spells the servers
  ``postgresql://aliak@127.0.0.1:5432/aliak`` and ``redis://127.0.0.1:6379/0`` and the
  schema ``aliak_ops``; the test substitutes the real DSN and URL and a schema unique to
  the run (also set as ``ALIAK_POSTGRES_SCHEMA``), dropped afterwards.

Expected output: a ```text block right after a ```sh block (nothing but blank lines
between them) shows what the block prints, stdout and stderr together. Each of its
non-blank lines must match a whole line of the output (surrounding blanks ignored), in
any order, where:

- a run of blanks matches any run of blanks (table columns are as wide as their values);
- ``<name>`` -- a placeholder, lower-case words in angle brackets (``<id>``, ``<date>``,
  ``<request id>``) -- matches a run of non-blank characters (a generated value);
- ``...`` matches any text (a tail that differs between platforms or runs);
- a line that is ``...`` alone stands for lines left out and matches nothing.

Any other ```text block is not a command and is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "operating.md"
VENV_BIN = Path(sys.executable).parent

# What the page writes for the test servers, and where the test finds the real ones.
DOC_POSTGRES_DSN = "postgresql://aliak@127.0.0.1:5432/aliak"
DOC_REDIS_URL = "redis://127.0.0.1:6379/0"
DOC_SCHEMA = "aliak_ops"
SERVICES = {"postgres": "ALIAK_TEST_POSTGRES_DSN", "redis": "ALIAK_TEST_REDIS_URL"}
# A block that runs longer is stuck (a server left running, a prompt for input).
BLOCK_TIMEOUT = 120

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_NEEDS = re.compile(r"<!--\s*needs:\s*([\w\s,]+?)\s*-->")
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _-]*>")
_TOKEN = re.compile(r"(<[a-z][a-z0-9 _-]*>|\.\.\.|\s+)")
_OMITTED = "..."
# `aliak [options] serve ...` or `aliak ... --follow`, as a command (not "aliak serve: ...").
_RUNS_FOREVER = re.compile(r"\baliak\b(?:\s+\S+)*?\s+(?:serve(?=\s|$)|--follow\b)")


@dataclass(frozen=True)
class Block:
    """A ```sh block: where its fence opens, its script, the servers it needs, and the
    lines of the ```text block that shows its output (none when there is none)."""

    line: int
    script: str
    needs: frozenset[str]
    expected: tuple[str, ...]


def sh_blocks(text: str) -> list[Block]:
    """The ```sh blocks of a page, in order."""
    fences = list(_FENCE.finditer(text))
    blocks: list[Block] = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        before = text[fences[index - 1].end() if index else 0 : fence.start()]
        last_line = before.rstrip().rpartition("\n")[2]
        needs = _NEEDS.fullmatch(last_line.strip())
        expected: tuple[str, ...] = ()
        following = fences[index + 1] if index + 1 < len(fences) else None
        if (
            following is not None
            and following.group(1) == "text"
            and not text[fence.end() : following.start()].strip()
        ):
            expected = tuple(
                line.strip() for line in following.group(2).splitlines() if line.strip()
            )
        blocks.append(
            Block(
                line=text.count("\n", 0, fence.start()) + 1,
                script=fence.group(2),
                needs=frozenset(re.split(r"[\s,]+", needs.group(1))) if needs else frozenset(),
                expected=expected,
            )
        )
    return blocks


def line_pattern(expected: str) -> re.Pattern[str]:
    """The regular expression an output line must match in full for ``expected``."""
    parts: list[str] = []
    for token in _TOKEN.split(expected.strip()):
        if not token:
            continue
        if token == _OMITTED:
            parts.append(".*")
        elif _PLACEHOLDER.fullmatch(token):
            parts.append(r"\S+")
        elif token.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def unmatched(expected: Iterable[str], output: str) -> list[str]:
    """The expected lines that no line of ``output`` matches."""
    lines = [line.strip() for line in output.splitlines()]
    return [
        wanted
        for wanted in expected
        if wanted != _OMITTED and not any(line_pattern(wanted).fullmatch(line) for line in lines)
    ]


def clean_environment(home: Path) -> dict[str, str]:
    """Only what the page's commands need: nothing inherited but the system's PATH."""
    return {
        "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", os.defpath)]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "LOGNAME": "operator",
        "USER": "operator",
    }


def run_in_order(
    blocks: Sequence[Block],
    directory: Path,
    environment: Mapping[str, str],
    substitutions: Mapping[str, str] | None = None,
) -> None:
    """Run each block in ``directory``; fail at the first that exits non-zero or does
    not print what the page shows."""
    for block in blocks:
        script = block.script
        for written, real in (substitutions or {}).items():
            script = script.replace(written, real)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=directory,
            env=dict(environment),
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        shown = f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
        assert done.returncode == 0, (
            f"{PAGE.name} line {block.line}: exit status {done.returncode}\n{script}{shown}"
        )
        missing = unmatched(block.expected, f"{done.stdout}\n{done.stderr}")
        assert not missing, (
            f"{PAGE.name} line {block.line}: the output lacks {missing}\n{script}{shown}"
        )


BLOCKS = sh_blocks(PAGE.read_text("utf-8"))


def test_the_page_has_commands_and_shows_their_output() -> None:
    assert len(BLOCKS) >= 10
    assert sum(bool(block.expected) for block in BLOCKS) >= 10
    assert any(block.needs for block in BLOCKS)
    for block in BLOCKS:
        assert block.needs <= set(SERVICES), f"line {block.line}: unknown needs {block.needs}"
        if not block.needs:  # it would run against no server at all
            for server in (DOC_POSTGRES_DSN, DOC_REDIS_URL):
                assert server not in block.script, f"line {block.line} needs a server"


def test_no_block_runs_a_command_that_never_ends() -> None:
    """``aliak serve`` and ``aliak audit --follow`` run until interrupted: a block may
    run them only under ``timeout``, or the suite would wait for ever."""
    for block in BLOCKS:
        for command in block.script.replace("\\\n", " ").splitlines():
            if _RUNS_FOREVER.search(command):
                assert re.search(r"\btimeout\b", command), f"line {block.line}: {command}"


@pytest.mark.parametrize(
    ("expected", "line", "matches"),
    [
        ("exit status: 1", "exit status: 1", True),
        ("exit status: 1", "exit status: 0", False),
        ("exit status: 1", "exit status: 10", False),
        ("<id>  Active  -  no", "LTAI5tExampleExample0001      Active -   no", True),
        ("<id>  Active", "LTAI5tExampleExample0001  Inactive", False),
        ('"requestId": "<request id>",', '"requestId": "0D8A4E4C-8E4B",', True),
        ("error: cannot open ... refused", "error: cannot open x: it is refused", True),
        ("<id>", "two words", False),
    ],
)
def test_an_output_line_matches_only_what_the_page_shows(
    expected: str, line: str, matches: bool
) -> None:
    output = f"a line before\n  {line}  \nand one after"
    assert (unmatched([expected], output) == []) is matches


def test_a_block_that_prints_something_else_fails(tmp_path: Path) -> None:
    wrong = Block(line=1, script="echo 'exit status: 0'\n", needs=frozenset(), expected=())
    with pytest.raises(AssertionError, match="lacks"):
        run_in_order(
            [Block(wrong.line, wrong.script, wrong.needs, ("exit status: 1",))],
            tmp_path,
            clean_environment(tmp_path),
        )
    with pytest.raises(AssertionError, match="exit status 1"):
        run_in_order([Block(1, "false\n", frozenset(), ())], tmp_path, clean_environment(tmp_path))


def test_every_sh_block_runs_and_prints_what_the_page_shows(tmp_path: Path) -> None:
    run_in_order(
        [block for block in BLOCKS if not block.needs], tmp_path, clean_environment(tmp_path)
    )


def test_every_sh_block_on_postgres_and_redis_runs(tmp_path: Path) -> None:
    blocks = [block for block in BLOCKS if block.needs]
    needed = {SERVICES[name] for block in blocks for name in block.needs}
    missing = sorted(name for name in needed if not os.environ.get(name))
    if missing:
        pytest.skip(f"no test servers ({', '.join(missing)} unset): run under .ci/services")
    dsn = os.environ[SERVICES["postgres"]]
    schema = f"aliak_docs_{uuid.uuid4().hex[:12]}"
    environment = {**clean_environment(tmp_path), "ALIAK_POSTGRES_SCHEMA": schema}
    substitutions = {
        DOC_POSTGRES_DSN: dsn,
        DOC_REDIS_URL: os.environ[SERVICES["redis"]],
        DOC_SCHEMA: schema,
    }
    try:
        run_in_order(blocks, tmp_path, environment, substitutions)
    finally:
        _drop_schema(dsn, schema)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg  # only where the servers are: an optional dependency
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
