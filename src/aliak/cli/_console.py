"""What the ``aliak`` command prints: JSON for scripts, aligned tables for people.

Results go to stdout; warnings, notes and errors to stderr, so ``--json`` output is
always exactly one JSON value a script can parse. Under ``--json`` an error is one JSON
object on one line of stderr, ``{"Code": ..., "Message": ..., "Detail": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TextIO

from aliak.timestamps import ACS_DATE_FORMAT

__all__ = ["CommandFailed", "Console", "utc_text"]

_EMPTY_CELL = "-"


class CommandFailed(Exception):
    """A command cannot run (no store at the path, a file that is not a request): the
    message is printed as ``error: <message>`` and the command exits 1."""


def utc_text(moment: datetime | None) -> str | None:
    """The RAM API's date form, ``2024-05-01T12:00:00Z``."""
    return None if moment is None else moment.strftime(ACS_DATE_FORMAT)


def _cell(value: object) -> str:
    if value is None:
        return _EMPTY_CELL
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(item) for item in value) or _EMPTY_CELL
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


class Console:
    """One command's output streams and mode (``--json`` or text)."""

    __slots__ = ("err", "json_output", "out")

    def __init__(self, *, json_output: bool, out: TextIO, err: TextIO) -> None:
        self.json_output = json_output
        self.out = out
        self.err = err

    # -- stdout ---------------------------------------------------------------------

    def json(self, value: object) -> None:
        self.out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def raw(self, data: bytes) -> None:
        """Bytes to stdout as they are (a raw HTTP request, whatever its body holds)."""
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:  # a text-only stream (a StringIO in tests)
            self.out.write(data.decode("utf-8", "surrogateescape"))
            return
        buffer.write(data)
        buffer.flush()

    def fields(self, record: Mapping[str, object]) -> None:
        """One record as ``Name  value`` lines, values aligned."""
        width = max((len(name) for name in record), default=0)
        for name, value in record.items():
            self.line(f"{name.ljust(width)}  {_cell(value)}".rstrip())

    def table(self, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
        """Records as an aligned table under a header row."""
        cells = [[_cell(row.get(column)) for column in columns] for row in rows]
        widths = [
            max([len(column), *(len(line[index]) for line in cells)])
            for index, column in enumerate(columns)
        ]
        for line in [list(columns), *cells]:
            self.line(
                "  ".join(
                    text.ljust(width) for text, width in zip(line, widths, strict=True)
                ).rstrip()
            )

    def record(self, record: Mapping[str, object]) -> None:
        """A JSON object under ``--json``, else aligned fields."""
        if self.json_output:
            self.json(dict(record))
        else:
            self.fields(record)

    def records(
        self, columns: Sequence[str], rows: Sequence[Mapping[str, object]], *, empty: str
    ) -> None:
        """A JSON array under ``--json``, else a table (or ``empty`` when there are none)."""
        if self.json_output:
            self.json([dict(row) for row in rows])
        elif rows:
            self.table(columns, rows)
        else:
            self.line(empty)

    # -- stderr ---------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.err.write(text + "\n")

    def warn(self, text: str) -> None:
        self.err.write(f"warning: {text}\n")

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")

    def error_object(self, code: str, message: str, detail: str | None) -> None:
        """One JSON object on one line of stderr: what ``--json`` prints for an error."""
        value = {"Code": code, "Message": message, "Detail": detail}
        self.err.write(json.dumps(value, ensure_ascii=False) + "\n")

    def failure(self, text: str, *, code: str, message: str, detail: str | None) -> None:
        """An error: the JSON object under ``--json``, else ``error: <text>``."""
        if self.json_output:
            self.error_object(code, message, detail)
        else:
            self.error(text)
