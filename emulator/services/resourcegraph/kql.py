"""The part of the Kusto Query Language that Resource Graph queries over `Resources` use
here: `where` (==, =~, !=, !~, in, in~, !in, !in~, has, contains, startswith, isnull,
isnotnull, isempty, isnotempty, not(), and, or, parentheses), `project` (paths and
`name = path`), `order by` (asc/desc; KQL's default is desc) and `limit`/`take`.

Anything else is refused with a `KqlError` naming the position and token, the way Resource
Graph answers a query it cannot parse (400 BadRequest, InvalidQuery/ParserFailure), rather
than silently returning wrong rows. Semantics follow the Kusto docs (learn.microsoft.com/
kusto/query/datatypes-string-operators): `==` is case-sensitive, `=~` is not; `has` here is
a case-insensitive substring match (Kusto matches whole terms; close enough for ids)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op>!in~|!in(?![\w~])|in~|==|!=|=~|!~|[|(),.\[\]=])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {"==", "!=", "=~", "!~", "in", "in~", "!in", "!in~", "has", "contains", "startswith"}
_NULL_TESTS = {"isnull", "isnotnull", "isempty", "isnotempty"}


class KqlError(ValueError):
    """A query this parser does not understand or that is not valid KQL."""

    def __init__(self, message: str, position: int, token: str) -> None:
        super().__init__(f"{message} (position {position}, near {token!r})")
        self.position, self.token = position, token


@dataclass
class Query:
    """A parsed query: apply it to the table's rows."""

    table: str
    steps: list[Callable[[list[Row]], list[Row]]]

    def run(self, rows: list[Row]) -> list[Row]:
        """The rows the query selects, projected and ordered."""
        for step in self.steps:
            rows = step(rows)
        return rows


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise KqlError("unexpected character", pos, text[pos : pos + 10])
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return out


def lookup(row: Row, path: tuple[str, ...]) -> Any:
    """A column or a nested property (None when missing)."""
    value: Any = row
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, str) else str(value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    # -- token helpers ---------------------------------------------------------------
    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", -1)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok_kind, tok, pos = self.peek()
        wanted = value is None or tok.lower() == value
        if tok_kind == "end" or not wanted or (kind is not None and tok_kind != kind):
            raise KqlError(f"expected {value or kind}", pos, tok or "end of query")
        self.i += 1
        return tok

    def at(self, *values: str) -> bool:
        return self.peek()[1].lower() in values and self.peek()[0] != "str"

    # -- grammar ---------------------------------------------------------------------
    def query(self) -> Query:
        table = self.take(kind="word")
        if table.lower() != "resources":
            raise KqlError("only the Resources table is served", 0, table)
        steps = []
        while self.peek()[0] != "end":
            self.take("|")
            steps.append(self.operator())
        return Query(table, steps)

    def operator(self) -> Callable[[list[Row]], list[Row]]:
        _, word, pos = self.peek()
        name = self.take(kind="word").lower()
        if name == "where":
            predicate = self.disjunction()
            return lambda rows: [r for r in rows if predicate(r)]
        if name == "project":
            return self.project()
        if name in ("limit", "take"):
            count = int(self.take(kind="num"))
            return lambda rows: rows[:count]
        if name == "order":
            self.take("by")
            path = self.path()
            descending = True
            if self.at("asc", "desc"):
                descending = self.take().lower() == "desc"
            return lambda rows: sorted(
                rows, key=lambda r: _text(lookup(r, path)), reverse=descending
            )
        raise KqlError("unsupported operator", pos, word)

    def project(self) -> Callable[[list[Row]], list[Row]]:
        columns: list[tuple[str, tuple[str, ...]]] = []
        while True:
            path = self.path()
            if self.at("="):
                self.take("=")
                if len(path) != 1:
                    raise KqlError("a column name is one word", self.peek()[2], ".".join(path))
                columns.append((path[0], self.path()))
            else:
                columns.append(("_".join(path), path))
            if not self.at(","):
                break
            self.take(",")
        return lambda rows: [{name: lookup(r, p) for name, p in columns} for r in rows]

    def path(self) -> tuple[str, ...]:
        parts = [self.take(kind="word")]
        while self.at(".", "["):
            if self.take() == ".":
                parts.append(self.take(kind="word"))
            else:
                parts.append(self.take(kind="str")[1:-1])
                self.take("]")
        return tuple(parts)

    def disjunction(self) -> Predicate:
        terms = [self.conjunction()]
        while self.at("or"):
            self.take("or")
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def conjunction(self) -> Predicate:
        terms = [self.term()]
        while self.at("and"):
            self.take("and")
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def term(self) -> Predicate:
        if self.at("("):
            self.take("(")
            inner = self.disjunction()
            self.take(")")
            return inner
        if self.at("not"):
            self.take("not")
            self.take("(")
            negated = self.disjunction()
            self.take(")")
            return lambda r: not negated(r)
        if self.at(*_NULL_TESTS):
            test = self.take().lower()
            self.take("(")
            path = self.path()
            self.take(")")
            return _null_test(test, path)
        path = self.path()
        _, op, pos = self.peek()
        op = op.lower()
        if op == "!" or op not in _COMPARISONS:
            raise KqlError("expected a comparison", pos, op or "end of query")
        self.i += 1
        if op in ("in", "in~", "!in", "!in~"):
            values = self.value_list()
            return _membership(path, op, values)
        return _compare(path, op, self.value())

    def value_list(self) -> list[Any]:
        self.take("(")
        values = [self.value()]
        while self.at(","):
            self.take(",")
            values.append(self.value())
        self.take(")")
        return values

    def value(self) -> Any:
        kind, tok, pos = self.peek()
        self.i += 1
        if kind == "str":
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        if kind == "word" and tok.lower() in ("true", "false"):
            return tok.lower() == "true"
        raise KqlError("expected a value", pos, tok or "end of query")


def _null_test(test: str, path: tuple[str, ...]) -> Predicate:
    if test == "isnull":
        return lambda r: lookup(r, path) is None
    if test == "isnotnull":
        return lambda r: lookup(r, path) is not None
    if test == "isempty":
        return lambda r: lookup(r, path) in (None, "")
    return lambda r: lookup(r, path) not in (None, "")


def _membership(path: tuple[str, ...], op: str, values: list[Any]) -> Predicate:
    folded = op.endswith("~")
    wanted = {_text(v) if folded else v for v in values}
    negated = op.startswith("!")

    def test(row: Row) -> bool:
        value = lookup(row, path)
        return ((_text(value) if folded else value) in wanted) != negated

    return test


def _compare(path: tuple[str, ...], op: str, expected: Any) -> Predicate:
    folded = _text(expected)
    tests: dict[str, Predicate] = {
        "==": lambda r: lookup(r, path) == expected,
        "!=": lambda r: lookup(r, path) != expected,
        "=~": lambda r: _text(lookup(r, path)) == folded,
        "!~": lambda r: _text(lookup(r, path)) != folded,
        "has": lambda r: folded in _text(lookup(r, path)),
        "contains": lambda r: folded in _text(lookup(r, path)),
        "startswith": lambda r: _text(lookup(r, path)).startswith(folded),
    }
    return tests[op]


def parse(text: str) -> Query:
    """Parse a query, or raise KqlError naming where it went wrong."""
    return _Parser(text).query()
