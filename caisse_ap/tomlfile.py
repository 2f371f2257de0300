"""Reading the package's TOML data files, with "file:line: reason" errors.

Three kinds of file are read this way: the terminal's profiles
(terminal/profiles), the conformance kit's scenarios (conformance/catalogue.py)
and the farm's `--terminals` file (terminal/web/farm_file.py). Each checks its
own keys and values; what they share is here, once:

- `decode(text, where, error)`: the TOML text as tables, or `error(where, reason)`
  naming the line tomllib stopped at;
- `line_of(text, section, key)`: the line of a key, to point at it;
- `TableReader`: one table of a file, read key by key with its type checked,
  every key accounted for (`check_known()`), and `fail()` giving the error to
  raise at the key's line.

`error` is the file kind's own exception class (or any callable taking `where`,
"file:line", and `reason`, one sentence): a profile raises ProfileError, a
scenario ScenarioError. Pure: no I/O.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import TypeGuard, TypeVar, overload

from . import tags

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NESTING = 32  # brackets deep: where deep_line() places a value nested too deeply

ErrorFactory = Callable[[str, str], Exception]  # (where "file:line", reason) -> the error

# A file's values are untrusted: `object` until a reader checked their type.
Table = dict[str, object]  # a TOML table (tomllib's keys are always text)

_T = TypeVar("_T")
_U = TypeVar("_U")
_D = TypeVar("_D")


def decode(text: str, where: str, error: ErrorFactory) -> Table:
    """The tables of TOML `text`, or `error("where:line", reason)` when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        match = re.search(r"line (\d+)", str(problem))
        raise error(f"{where}:{match.group(1) if match else 1}",
                    f"not valid TOML: {problem}") from None
    except RecursionError:  # tomllib reads nested arrays and tables by recursion
        raise error(f"{where}:{deep_line(text)}", "arrays or tables nested too deeply") from None
    except ValueError as problem:  # an integer of over 4,300 digits, and the like
        raise error(f"{where}:1", f"not valid TOML: {problem}") from None


def all_text(values: Sequence[object]) -> TypeGuard[Sequence[str]]:
    """Whether every value of a list read from a file is text."""
    return all(isinstance(value, str) for value in values)


def deep_line(text: str) -> int:
    """The line where brackets and braces first open past NESTING (1 if none): where a
    deeply nested value begins, to say so (strings are not told apart: a guide only)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for char in line:
            depth += (char in "[{") - (char in "]}")
            if depth > NESTING:
                return number
    return 1


def line_of(text: str, section: str, key: str | None) -> int:
    """The line of `key` in `[section]` (1-based; "" is the top level, "a.b" a sub-table),
    or of its own `[section.key]` table, or of the section, or 1."""
    current, section_line, table_line = "", 1, None
    own_table = f"{section}.{key}" if section else key
    header = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
    for number, line in enumerate(text.splitlines(), 1):
        match = header.match(line)
        if match:
            current = match.group(1).replace('"', "").replace("'", "").replace(" ", "")
            if current == section:
                section_line = number
            if current == own_table:
                table_line = number
            continue
        if key is not None and current == section:
            name = line.split("=", 1)[0].strip().strip("\"'")
            if "=" in line and name == key:
                return number
    return table_line or section_line


_KIND_WORDS = {"str": "text", "dict": "a table", "list": "a list", "int": "a whole number",
               "bool": "true or false"}


class TableReader:
    """One table of a TOML file (`section`, "" for the top level), read key by key.

    `get()` checks a key's type and remembers it was read; `check_known()` then
    refuses any key nobody read (a misspelt key is an error, not a silence).
    `fail(key, reason)` is the error to raise, at the key's line.
    """

    def __init__(self, path: str, text: str, table: Table, section: str = "", *,
                 error: ErrorFactory) -> None:
        self.path, self.text, self.table, self.section = path, text, table, section
        self.error = error
        self.used: set[str] = set()

    def fail(self, key: str | None, reason: str) -> Exception:
        return self.error(f"{self.path}:{line_of(self.text, self.section, key)}", reason)

    def sub(self, name: str) -> TableReader:
        """The sub-table `name` (an empty one when absent)."""
        value = self.get(name, dict, {})
        section = f"{self.section}.{name}" if self.section else name
        return TableReader(self.path, self.text, value, section, error=self.error)

    # The kinds a file's value may have, and what get() then gives (a list's or a
    # table's items are still unchecked: `object`).
    @overload
    def get(self, key: str, kind: type[list[object]], default: list[object]) -> list[object]:
        ...

    @overload
    def get(self, key: str, kind: type[dict[str, object]], default: Table) -> Table: ...

    @overload
    def get(self, key: str, kind: type[_T]) -> _T | None: ...

    @overload
    def get(self, key: str, kind: type[_T], default: _D) -> _T | _D: ...

    @overload
    def get(self, key: str, kind: tuple[type[_T], type[_U]], default: _D) -> _T | _U | _D: ...

    def get(self, key: str, kind: type | tuple[type, ...], default: object = None) -> object:
        """The value of `key`, which must be of `kind` (true and false are not numbers),
        or `default` when the table lacks it."""
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(
                k.__name__ for k in kind)
            raise self.fail(key, f"{self.name(key)} must be {_KIND_WORDS.get(names, names)}, "
                                 f"not {value!r}")
        return value

    @overload
    def text_in(self, key: str, tag: str) -> str | None: ...

    @overload
    def text_in(self, key: str, tag: str, default: str) -> str: ...

    def text_in(self, key: str, tag: str, default: str | None = None) -> str | None:
        """A text value that must fit the tag's size in the tag table."""
        value = self.get(key, str, default)
        if value is not None and value is not default:
            self.check_fits(key, tag, value)
        return value

    def check_fits(self, key: str, tag: str, value: str) -> None:
        info = tags.tag(tag)
        if not (value.isascii() and value.isprintable()):
            raise self.fail(key, f"{self.name(key)} must be printable ASCII, not {value!r}")
        if not info.min_size <= len(value) <= info.max_size:
            size = (f"{info.max_size}" if info.min_size == info.max_size
                    else f"{info.min_size} to {info.max_size}")
            raise self.fail(key, f"{self.name(key)} {value!r} does not fit {tag}: the tag "
                                 f"table allows {size} characters, it has {len(value)}")

    def check_known(self) -> None:
        """Refuse the first key of the table that no get() asked for."""
        for key in self.table:
            if key not in self.used:
                raise self.fail(key, f"unknown key {self.name(key)}")

    def name(self, key: str) -> str:
        """The key's full name in the file ("answer.version")."""
        return f"{self.section}.{key}" if self.section else key


__all__ = ["NESTING", "Table", "TableReader", "all_text", "decode", "deep_line", "line_of"]
