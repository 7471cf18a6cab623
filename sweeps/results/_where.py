"""A small, safe filter language compiled to pyarrow.compute expressions (no eval).

    val_loss < 0.5 and status == 'SUCCESS'
    stage in ('smoke', 'hisso') and not (error is null)
    amp_enabled or params_hisso__window >= 32

Grammar (keywords are case-insensitive; `=` is accepted for `==`):

    expr       := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | '(' expr ')' | comparison
    comparison := operand [op operand | ['not'] 'in' '(' literal, ... ')' | 'is' ['not'] 'null']
    operand    := column | number | 'string' | "string" | true | false
    column     := identifier | `any name in backticks`

Comparisons with a null value are null, and a filter keeps only rows where the whole expression
is true (SQL semantics).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Union

import pyarrow as pa
import pyarrow.compute as pc


class WhereError(ValueError):
    """A filter expression that does not parse or does not fit the table."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<backtick>`[^`]+`)
  | (?P<op>==|!=|<>|<=|>=|<|>|=)
  | (?P<punct>[(),\[\]])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_COMPARE = {"==": "equal", "=": "equal", "!=": "not_equal", "<>": "not_equal", "<": "less",
            "<=": "less_equal", ">": "greater", ">=": "greater_equal"}


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any  # bool, int, float or str


@dataclass(frozen=True)
class Compare:
    op: str
    left: Union[Column, Literal]
    right: Union[Column, Literal]


@dataclass(frozen=True)
class InList:
    column: Column
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class IsNull:
    column: Column
    negated: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    part: "Node"


@dataclass(frozen=True)
class Truthy:
    column: Column  # a bare boolean column


Node = Union[Compare, InList, IsNull, BoolOp, Not, Truthy]


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _error(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            word = match.group()
            if kind == "word" and word.lower() in _KEYWORDS:
                kind, word = "kw", word.lower()
            tokens.append(_Tok(kind, word, pos))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _error(text: str, pos: int, message: str) -> WhereError:
    return WhereError(f"bad filter expression {text!r}: {message} at position {pos}\n"
                      f"  {text}\n  {' ' * pos}^")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, text: str, what: str) -> None:
        if not self.accept(kind, text):
            raise self.fail(f"expected {what}")

    def fail(self, message: str) -> WhereError:
        tok = self.peek()
        found = "end of input" if tok.kind == "end" else repr(tok.text)
        return _error(self.text, tok.pos, f"{message}, found {found}")

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.fail("expected a condition")
        node = self.or_expr()
        if self.peek().kind != "end":
            raise self.fail("expected 'and', 'or' or the end")
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.accept("kw", "or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while self.accept("kw", "and"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def not_expr(self) -> Node:
        if self.accept("kw", "not"):
            return Not(self.not_expr())
        if self.accept("punct", "("):
            node = self.or_expr()
            self.expect("punct", ")", "')'")
            return node
        return self.comparison()

    def operand(self) -> Column | Literal:
        tok = self.take()
        if tok.kind == "word":
            return Column(tok.text)
        if tok.kind == "backtick":
            return Column(tok.text[1:-1])
        if tok.kind == "number":
            is_int = re.fullmatch(r"[-+]?\d+", tok.text) is not None
            return Literal(int(tok.text) if is_int else float(tok.text))
        if tok.kind == "string":
            return Literal(re.sub(r"\\(.)", r"\1", tok.text[1:-1]))
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return Literal(tok.text == "true")
        self.i -= 1
        if tok.kind == "kw" and tok.text == "null":
            raise self.fail("null can only be tested with 'is null' or 'is not null'")
        raise self.fail("expected a column name or a value")

    def comparison(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            right = self.operand()
            if isinstance(left, Literal) and isinstance(right, Literal):
                raise _error(self.text, tok.pos, "a comparison needs at least one column")
            return Compare(_COMPARE[tok.text], left, right)
        if tok.kind == "kw" and tok.text in ("in", "not"):
            negated = self.accept("kw", "not")
            self.expect("kw", "in", "'in' after 'not'")
            column = self._column_of(left, tok)
            close = ")" if self.accept("punct", "(") else "]" if self.accept("punct", "[") else None
            if close is None:
                raise self.fail("expected '(' to start the list of values")
            values = []
            while True:
                value = self.operand()
                if not isinstance(value, Literal):
                    raise _error(self.text, self.tokens[self.i - 1].pos, "lists hold values, not columns")
                values.append(value.value)
                if self.accept("punct", close):
                    break
                self.expect("punct", ",", f"',' or '{close}'")
            return InList(column, tuple(values), negated)
        if tok.kind == "kw" and tok.text == "is":
            self.take()
            negated = self.accept("kw", "not")
            self.expect("kw", "null", "'null' after 'is'")
            return IsNull(self._column_of(left, tok), negated)
        if isinstance(left, Column):
            return Truthy(left)
        raise self.fail("expected a comparison operator")

    def _column_of(self, operand: Column | Literal, tok: _Tok) -> Column:
        if not isinstance(operand, Column):
            raise _error(self.text, tok.pos, f"'{tok.text}' needs a column on its left")
        return operand


def parse_where(text: str) -> Node:
    """Parse a filter expression into a syntax tree (raises WhereError)."""
    if not isinstance(text, str):
        raise TypeError(f"a filter expression must be a str, got {type(text).__name__}")
    return _Parser(text).parse()


def columns_of(node: Node) -> set[str]:
    """Column names a syntax tree refers to."""
    if isinstance(node, Compare):
        return {o.name for o in (node.left, node.right) if isinstance(o, Column)}
    if isinstance(node, (InList, IsNull, Truthy)):
        return {node.column.name}
    if isinstance(node, BoolOp):
        return set().union(*(columns_of(p) for p in node.parts))
    return columns_of(node.part)


def compile_where(text: str, schema: pa.Schema) -> pc.Expression:
    """Parse `text` and build a pyarrow.compute expression checked against `schema`."""
    node = parse_where(text)
    known = schema.names
    for name in sorted(columns_of(node)):
        if name not in known:
            raise WhereError(unknown_column_message(name, known, f"in filter {text!r}"))
    return _build(node, schema, text)


def unknown_column_message(name: str, known: list[str], context: str = "") -> str:
    hint = difflib.get_close_matches(name, known, n=3)
    maybe = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
    where = f" {context}" if context else ""
    return f"unknown column {name!r}{where}.{maybe} Known columns: {', '.join(known)}"


def _kind(type_: pa.DataType) -> str:
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        return "number"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_dictionary(type_):
        return "string"
    if pa.types.is_timestamp(type_):
        return "timestamp"
    if pa.types.is_null(type_):
        return "null"
    return str(type_)


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "string"


def _literal(value: Any, column: str, schema: pa.Schema, text: str) -> pa.Scalar:
    type_ = schema.field(column).type
    kind, lit = _kind(type_), _literal_kind(value)
    if kind == "null":
        return pa.scalar(None, type_)
    if kind == "timestamp" and lit == "string":
        try:
            return pa.scalar(value).cast(pa.timestamp("us")).cast(type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            try:
                return pa.scalar(value).cast(type_)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise WhereError(
                    f"bad filter expression {text!r}: {value!r} is not a timestamp "
                    f"(column {column!r} is {type_}; write e.g. '2026-11-23 18:00:00')"
                ) from None
    if kind != lit:
        raise WhereError(
            f"bad filter expression {text!r}: column {column!r} holds {kind} values "
            f"({type_}) and cannot be compared with the {lit} {value!r}"
        )
    return pa.scalar(value, type_ if kind != "number" else None)


def _build(node: Node, schema: pa.Schema, text: str) -> pc.Expression:
    if isinstance(node, Compare):
        left, right = node.left, node.right
        if isinstance(left, Column) and isinstance(right, Column):
            kinds = {_kind(schema.field(left.name).type), _kind(schema.field(right.name).type)}
            if len(kinds - {"null"}) > 1:
                raise WhereError(
                    f"bad filter expression {text!r}: columns {left.name!r} and {right.name!r} "
                    f"hold different kinds of values ({' and '.join(sorted(kinds))})"
                )
            a, b = pc.field(left.name), pc.field(right.name)
        elif isinstance(left, Column):
            a, b = pc.field(left.name), pc.scalar(_literal(right.value, left.name, schema, text))
        else:
            a = pc.scalar(_literal(left.value, right.name, schema, text))
            b = pc.field(right.name)
        return getattr(pc, node.op)(a, b)
    if isinstance(node, InList):
        # An OR of equalities rather than is_in, so that a null value gives null (SQL's
        # `NULL IN (...)`) and `not in` drops it too; is_in would call it false.
        field = pc.field(node.column.name)
        expr = None
        for value in node.values:
            part = field == pc.scalar(_literal(value, node.column.name, schema, text))
            expr = part if expr is None else (expr | part)
        return ~expr if node.negated else expr
    if isinstance(node, IsNull):
        field = pc.field(node.column.name)
        return field.is_valid() if node.negated else field.is_null()
    if isinstance(node, Truthy):
        kind = _kind(schema.field(node.column.name).type)
        if kind not in ("bool", "null"):
            raise WhereError(
                f"bad filter expression {text!r}: column {node.column.name!r} holds {kind} values; "
                f"compare it with something (e.g. {node.column.name} == ...)"
            )
        return pc.field(node.column.name) == pc.scalar(True)
    if isinstance(node, Not):
        return ~_build(node.part, schema, text)
    parts = [_build(p, schema, text) for p in node.parts]
    expr = parts[0]
    for part in parts[1:]:
        expr = (expr & part) if node.op == "and" else (expr | part)
    return expr
