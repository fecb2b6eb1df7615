"""A config.pbtxt's lines, scanned once: each line's code part and where every `field: "value"` appears.

Problems name the line they are on. Searching the file again for each finding made validation quadratic (8,000
parameters took minutes); one pass builds an index that every lookup then answers by bisection."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict

# Unrolled string bodies (no alternation inside a repeat): linear on a megabyte-long string, with no backtracking
# stack growing per character.
_DOUBLE = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_SINGLE = r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'"
_QUOTE_OR_COMMENT = re.compile(r"[\"'#]")
_STRING_REST = {'"': re.compile(_DOUBLE[1:]), "'": re.compile(_SINGLE[1:])}
_STRINGS = re.compile(f"{_DOUBLE}|{_SINGLE}")
# `field: "value"` (the value as written, escapes included) and bare field names (`field:`, `field {`, `field [`).
_FIELD_VALUE = re.compile(r'\b(\w+)\s*:\s*"([^"\\\n]*(?:\\.[^"\\\n]*)*)"')
_FIELD = re.compile(r"\b(\w+)\s*[:{\[]")
_MAP_KIND = re.compile(r"\b(input_map|output_map)\b")
_STEP_HEAD = "model_name"


def code_part(line: str) -> str:
    """The line without its trailing `#` comment (a `#` inside a quoted string is kept)."""
    position = 0
    while found := _QUOTE_OR_COMMENT.search(line, position):
        char = found.group()
        if char == "#":
            return line[: found.start()]
        closing = _STRING_REST[char].match(line, found.end())
        if closing is None:  # an unterminated string runs to the end of the line, so no comment follows
            return line
        position = closing.end()
    return line


class ConfigLines:
    """Built once per config; every lookup returns a 1-based line number or None."""

    def __init__(self, lines: list[str]) -> None:
        self.count = len(lines)
        self.code: list[str] = []
        self._values: dict[tuple[str, str], list[int]] = defaultdict(list)  # (field, value) -> line numbers
        self._mapped: dict[tuple[str, str, str], list[int]] = defaultdict(list)  # (map kind, field, value) -> ...
        self._fields: dict[str, list[int]] = defaultdict(list)  # field name -> line numbers
        kind = None  # the input_map/output_map block the scan is in, within the current ensemble step
        for number, line in enumerate(lines, start=1):
            code = code_part(line)
            self.code.append(code)
            structure = _STRINGS.sub('""', code) if '"' in code or "'" in code else code  # field names, no text
            names = {match.group(1) for match in _FIELD.finditer(structure)}
            for name in names:
                self._fields[name].append(number)
            if _STEP_HEAD in names:
                kind = None
            for match in _MAP_KIND.finditer(structure):
                kind = match.group(1)
            for match in _FIELD_VALUE.finditer(code):
                key = (match.group(1), match.group(2))
                self._values[key].append(number)
                if kind is not None:
                    self._mapped[(kind, *key)].append(number)

    def value_line(self, field: str, value: str, start: int = 0, end: int | None = None) -> int | None:
        """First line in the 0-based range [start, end) holding `field: "value"`."""
        return _first(self._values.get((field, value), []), start, end)

    def mapped_line(self, kind: str, field: str, value: str, start: int = 0, end: int | None = None) -> int | None:
        """First line in [start, end) holding `field: "value"` inside an input_map or output_map block."""
        found = _first(self._mapped.get((kind, field, value), []), start, end)
        return found if found is not None else self.value_line(field, value, start, end)

    def field_lines(self, field: str) -> list[int]:
        """Every line where `field` opens (`field:`, `field {` or `field [`)."""
        return self._fields.get(field, [])

    def field_line(self, field: str, start: int = 0, end: int | None = None) -> int | None:
        return _first(self._fields.get(field, []), start, end)


def _first(numbers: list[int], start: int, end: int | None) -> int | None:
    index = bisect_left(numbers, start + 1)
    if index < len(numbers) and (end is None or numbers[index] <= end):
        return numbers[index]
    return None
