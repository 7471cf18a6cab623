"""--where and --sort through DuckDB: semantics against a reference evaluator, errors, safety."""

from __future__ import annotations

import math
import operator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psann.errors import ValidationError
from sweeps.results import WhereError
from sweeps.results._where import select_rows

pytest.importorskip("duckdb")

TABLE = pa.table({
    "x": pa.array([0.5, -1.0, None, 2.25, 0.0, 1e3], pa.float64()),
    "n": pa.array([1, 2, 3, None, -4, 0], pa.int64()),
    "s": pa.array(["SUCCESS", "ERROR", None, "it's", "PRUNED", ""], pa.string()),
    "b": pa.array([True, False, None, True, False, None], pa.bool_()),
})
ROWS = TABLE.to_pylist()
OPS = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, "<>": operator.ne, "<": operator.lt,
       "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def kept(where: str, table: pa.Table = TABLE) -> list[dict]:
    return table.take(select_rows(table, "trials", where=where)).to_pylist()


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


numbers = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -1.0, 2.25, 1e3, 0.0]))
strings = st.sampled_from(["SUCCESS", "ERROR", "it's", "PRUNED", "", "x"])


@st.composite
def comparisons(draw):
    column = draw(st.sampled_from(["x", "n", "s", "b"]))
    form = draw(st.sampled_from(["op", "in", "null"] if column != "b" else ["op", "null", "bare"]))
    if form == "null":
        negated = draw(st.booleans())
        text = f"{column} is {'not ' if negated else ''}null"
        return text, lambda r: (r[column] is not None) if negated else (r[column] is None)
    if form == "bare":
        return column, lambda r: r[column]
    values = {"x": numbers, "n": numbers, "s": strings, "b": st.booleans()}[column]
    if form == "in":
        items = draw(st.lists(values, min_size=1, max_size=3))
        negated = draw(st.booleans())
        literal = ", ".join(quote(v) if isinstance(v, str) else str(v) for v in items)
        text = f"{column} {'not ' if negated else ''}in ({literal})"

        def in_list(r):
            if r[column] is None:
                return None
            return (r[column] not in items) if negated else (r[column] in items)
        return text, in_list
    op = draw(st.sampled_from(sorted(OPS) if column != "b" else ["==", "!="]))
    value = draw(values)
    literal = quote(value) if isinstance(value, str) else ("true" if value is True else "false" if value is False else repr(value))
    flipped = draw(st.booleans())
    text = f"{literal} {op} {column}" if flipped else f"{column} {op} {literal}"

    def compare(r):
        if r[column] is None:
            return None
        return OPS[op](value, r[column]) if flipped else OPS[op](r[column], value)
    return text, compare


def kleene_and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def kleene_or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


expressions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: (f"({p[0][0]}) and ({p[1][0]})",
                                               lambda r, p=p: kleene_and(p[0][1](r), p[1][1](r)))),
        st.tuples(inner, inner).map(lambda p: (f"({p[0][0]}) OR ({p[1][0]})",
                                               lambda r, p=p: kleene_or(p[0][1](r), p[1][1](r)))),
        inner.map(lambda e: (f"NOT ({e[0]})",
                             lambda r, e=e: None if e[1](r) is None else not e[1](r))),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
def test_filter_keeps_exactly_the_rows_where_the_expression_is_true(expr):
    text, reference = expr
    assert kept(text) == [r for r in ROWS if reference(r) is True], text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("xnsb ()'\"<=>!,.-01eandortiul_`[];/*")), max_size=30))
def test_any_text_filters_or_raises_where_error(text):
    try:
        kept(text)
    except WhereError as exc:
        assert exc.key == "--where"


def test_and_binds_tighter_than_or_and_not_tighter_than_and():
    def ids(text):
        return [r["n"] for r in kept(text)]

    assert ids("n == 1 or n == 2 and x > 0") == [1]
    assert ids("(n == 1 or n == 2) and x > 0") == [1]
    assert ids("not n == 1 and x >= 0") == [-4, 0]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("x < 1 and", "ends too early"), ("x <", "ends too early"), ("(x < 1", "ends too early"),
     ("x < 1 x", "syntax error in 'x < 1 x'"), ("x = = 1", "syntax error"),
     ("s = 'it\\'s'", "syntax error")],
)
def test_malformed_expressions_say_syntax_error_with_the_expression(text, fragment):
    with pytest.raises(WhereError, match="syntax error") as info:
        kept(text)
    assert fragment in str(info.value) and info.value.key == "--where"
    assert isinstance(info.value, ValidationError) and isinstance(info.value, ValueError)


def test_syntax_error_inside_the_condition_points_at_it():
    with pytest.raises(WhereError) as info:
        kept("x < 1 x > 2")
    lines = str(info.value).splitlines()
    assert lines[-2] == "  x < 1 x > 2" and lines[-1] == "        ^"


def test_type_mismatches_are_reported_with_the_expression():
    with pytest.raises(WhereError, match=r"cannot evaluate \"n == 'a'\".*'a'"):
        kept("n == 'a'")
    with pytest.raises(WhereError, match="'x' gives DOUBLE values, not true/false; compare it"):
        kept("x")


def test_unknown_column_is_named_with_a_did_you_mean_and_the_known_columns():
    with pytest.raises(WhereError) as info:
        kept("nn > 1 and x < 2")
    assert info.value.key == "--where"
    assert "unknown column 'nn' in 'nn > 1 and x < 2' (did you mean 'n'?)" in info.value.reason
    assert info.value.reason.endswith("available columns: x, n, s, b")


def test_a_double_quoted_string_is_a_column_and_the_error_says_to_use_single_quotes():
    with pytest.raises(WhereError, match="unknown column 'SUCCESS'.*single quotes: 'SUCCESS'"):
        kept('s == "SUCCESS"')
    assert [r["n"] for r in kept('"n" = 1')] == [1]  # quoted names are columns, as in SQL


def test_sql_spellings_of_old_filters():
    assert [r["s"] for r in kept("s = 'it''s'")] == ["it's"]
    assert [r["s"] for r in kept("s = E'it\\'s'")] == ["it's"]
    assert [r["n"] for r in kept("x between 0 and 1")] == [1, -4]
    assert [r["s"] for r in kept("s like '%RR%'")] == ["ERROR"]


@pytest.mark.parametrize(
    "text",
    ["true); COPY trials TO 'stolen.csv'; SELECT (1",
     "true) UNION ALL SELECT * FROM trials WHERE (true",
     "true) ORDER BY (1",
     "true) LIMIT (0",
     "true) GROUP BY (x"],
)
def test_text_that_escapes_the_condition_is_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WhereError) as info:
        kept(text)
    assert "is not a single condition over the trials table" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_parameters_are_refused():
    with pytest.raises(WhereError, match="holds a parameter"):
        kept("x < $1")


def test_subqueries_are_refused_and_files_cannot_be_read(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for text in (f"x < (SELECT max(a) FROM read_csv('{secret}'))",
                 "n in (SELECT n FROM trials)",
                 "exists (SELECT 1)"):
        with pytest.raises(WhereError, match="holds a subquery"):
            kept(text)


def test_a_trailing_line_comment_does_not_swallow_the_closing_parenthesis():
    assert [r["n"] for r in kept("n == 1 -- the first")] == [1]


def test_sort_puts_nan_and_null_last_either_way_and_keeps_ties_in_table_order():
    table = pa.table({"v": [1.0, math.nan, None, 0.0, 1.0], "i": [0, 1, 2, 3, 4]})

    def order(descending):
        return table.take(select_rows(table, "trials", sort=["v"], descending=descending))["i"].to_pylist()

    assert order(False) == [3, 0, 4, 1, 2]
    assert order(True) == [0, 4, 3, 1, 2]
    assert table.take(select_rows(table, "trials", sort=["v"], top=2))["i"].to_pylist() == [3, 0]


def test_unknown_sort_column_is_a_where_error_with_key_sort():
    with pytest.raises(WhereError) as info:
        select_rows(TABLE, "trials", sort=["nn"])
    assert info.value.key == "--sort" and "unknown column 'nn' (did you mean 'n'?)" in str(info.value)


def test_timestamps_compare_with_iso_strings_in_utc():
    table = pa.table({"t": pa.array([0, 3_600_000_000], pa.timestamp("us", tz="UTC"))})
    rows = table.take(select_rows(table, "events", where="t >= '1970-01-01 01:00:00'"))
    assert rows["t"].to_pylist()[0].isoformat() == "1970-01-01T01:00:00+00:00" and rows.num_rows == 1
