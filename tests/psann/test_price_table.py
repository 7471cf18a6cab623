"""psann.data.price_table_dataset: your own CSV or Parquet price table as a run's dataset.

Tables are written into tmp_path: business days (weekends are 3-day steps, which must pass), three
assets, one feature column. Each of the three faults (a gap, a duplicate time, a zero price) is
refused on CSV and on Parquet with the time value and the file row named (and the line, for a CSV).
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from psann.data import SPLITS, price_table_dataset, regime_market_dataset, validate_dataset
from psann.errors import ValidationError
from psann.runconfig import ConfigError, parse_run_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CSV = REPO / "docs" / "data" / "prices_small.csv"
SHIPPED_CONFIG = REPO / "configs" / "hisso" / "prices_csv_local.yaml"
ASSETS = ("AAA", "BBB", "CCC")
ROWS = 60


def clean_table(rows: int = ROWS, seed: int = 0) -> dict[str, list]:
    """Columns of a clean table: business days from Monday 2024-01-01, random-walk prices, a feature."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2024-01-01", np.arange(rows), roll="forward")
    prices = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((rows, len(ASSETS))), axis=0))
    table = {"date": [d.item() for d in days]}
    for j, name in enumerate(ASSETS):
        table[name] = [round(float(p), 4) for p in prices[:, j]]
    table["signal"] = [round(float(v), 4) for v in rng.standard_normal(rows)]
    return table


def write(folder: Path, table: dict[str, list], fmt: str, name: str = "prices") -> Path:
    """The table as a CSV (written as text, as a user's file would be) or a Parquet file (date32 times)."""
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        names = list(table)
        lines = [",".join(names)]
        for i in range(len(table["date"])):
            cells = ["" if table[c][i] is None else str(table[c][i]) for c in names]
            lines.append(",".join(cells))
        path.write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(pa.table(table), path)
    return path


def with_rows(table: dict[str, list], keep: list[int]) -> dict[str, list]:
    return {name: [values[i] for i in keep] for name, values in table.items()}


def where(table: dict[str, list], row: int, fmt: str) -> str:
    """How an error names data row ``row`` (1-based) of the file."""
    return f"row {row}, line {row + 1}" if fmt == "csv" else f"row {row}"


FORMATS = ("csv", "parquet")


# -- clean files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_clean_table_gives_log_return_features_next_returns_and_prices_split_by_fraction(tmp_path, fmt):
    table = clean_table()
    data = price_table_dataset(write(tmp_path, table, fmt), features=["signal"])

    prices = np.array([table[a] for a in ASSETS]).T
    usable = ROWS - 2  # the first time has no past return, the last no next one
    n_train, n_val = int(usable * 0.6), int(usable * 0.2)
    assert [data[f"X_{s}"].shape[0] for s in SPLITS] == [n_train, n_val, usable - n_train - n_val]
    assert data["X_train"].shape[1:] == (len(ASSETS) + 1,) and data["y_train"].shape[1:] == (len(ASSETS),)
    X = np.concatenate([data[f"X_{s}"] for s in SPLITS])
    y = np.concatenate([data[f"y_{s}"] for s in SPLITS])
    p = np.concatenate([data[f"prices_{s}"] for s in SPLITS])
    # Row n is time step t = n + 1: features known at t, the return earned from t to t + 1.
    np.testing.assert_allclose(X[:, :3], np.log(prices[1:-1] / prices[:-2]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(X[:, 3], table["signal"][1:-1], rtol=1e-6)
    np.testing.assert_allclose(y, np.log(prices[2:] / prices[1:-1]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p, prices[1:-1], rtol=1e-6)
    assert set(data) == {f"{kind}_{s}" for kind in ("X", "y", "prices") for s in SPLITS}
    assert all(v.dtype == np.float32 for v in data.values())


def test_csv_and_parquet_of_the_same_table_give_the_same_dataset(tmp_path):
    table = clean_table()
    from_csv = price_table_dataset(write(tmp_path, table, "csv"), features=["signal"], lookback=5)
    from_parquet = price_table_dataset(write(tmp_path, table, "parquet"), features=["signal"], lookback=5)
    assert from_csv.keys() == from_parquet.keys()
    for key in from_csv:
        np.testing.assert_array_equal(from_csv[key], from_parquet[key])


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_in_any_order_are_sorted_by_time(tmp_path, fmt):
    table = clean_table()
    shuffled = with_rows(table, list(np.random.default_rng(1).permutation(ROWS)))
    expected = price_table_dataset(write(tmp_path, table, fmt, "sorted"), features=["signal"])
    got = price_table_dataset(write(tmp_path, shuffled, fmt, "shuffled"), features=["signal"])
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_lookback_gives_channels_first_windows_ending_at_each_step(tmp_path):
    path = write(tmp_path, clean_table(), "csv")
    flat = price_table_dataset(path, features=["signal"], train_fraction=0.5, val_fraction=0.25)
    windows = price_table_dataset(path, features=["signal"], lookback=8, train_fraction=0.5, val_fraction=0.25)
    X_flat = np.concatenate([flat[f"X_{s}"] for s in SPLITS])
    X = np.concatenate([windows[f"X_{s}"] for s in SPLITS])
    assert X.shape == (ROWS - 2 - 7, 4, 8)
    for n in (0, 10, X.shape[0] - 1):
        np.testing.assert_array_equal(X[n], X_flat[n : n + 8].T)  # oldest step first, ends at row n + 7
    y_flat = np.concatenate([flat[f"y_{s}"] for s in SPLITS])
    np.testing.assert_array_equal(np.concatenate([windows[f"y_{s}"] for s in SPLITS]), y_flat[7:])


def test_windows_have_the_layout_of_the_sequence_market(tmp_path):
    # The same prices through both loaders: the seeds' (N, C, L) layout, aligned the same way.
    market = regime_market_dataset(steps=80, assets=2, features=2, seed=0)
    prices = np.concatenate([market[f"prices_{s}"] for s in SPLITS]).astype(np.float64)
    table = {"date": list(range(80)), "A": list(prices[:, 0]), "B": list(prices[:, 1])}
    data = price_table_dataset(write(tmp_path, table, "parquet"), lookback=4)
    assert data["X_train"].ndim == 3 and data["X_train"].shape[1:] == (2, 4)
    assert validate_dataset(data).keys() == data.keys()


@pytest.mark.parametrize("fmt", FORMATS)
def test_split_by_dates_starts_val_and_test_at_those_days(tmp_path, fmt):
    table = clean_table()
    data = price_table_dataset(
        write(tmp_path, table, fmt), features=["signal"], val_start="2024-02-01", test_start=datetime.date(2024, 2, 20)
    )
    usable = [d for d in table["date"][1:-1]]
    n_train = sum(d < datetime.date(2024, 2, 1) for d in usable)
    n_test = sum(d >= datetime.date(2024, 2, 20) for d in usable)
    assert [data[f"X_{s}"].shape[0] for s in SPLITS] == [n_train, len(usable) - n_train - n_test, n_test]
    prices_b = np.array(table["BBB"])
    first_val = table["date"].index(datetime.date(2024, 2, 1))
    assert data["prices_val"][0, 1] == pytest.approx(prices_b[first_val])


def test_split_times_may_be_datetimes_with_an_offset(tmp_path):
    path = write(tmp_path, clean_table(), "parquet")
    by_date = price_table_dataset(path, features=["signal"], val_start="2024-02-01", test_start="2024-02-20")
    by_datetime = price_table_dataset(
        path, features=["signal"], val_start="2024-02-01T01:00:00+01:00", test_start=datetime.datetime(2024, 2, 20)
    )
    assert [by_datetime[f"X_{s}"].shape for s in SPLITS] == [by_date[f"X_{s}"].shape for s in SPLITS]


def test_numeric_time_column_splits_by_numbers(tmp_path):
    table = clean_table()
    table["date"] = [float(i) * 0.5 for i in range(ROWS)]
    data = price_table_dataset(write(tmp_path, table, "parquet"), val_start=15, test_start=22.5, features=["signal"])
    assert [data[f"X_{s}"].shape[0] for s in SPLITS] == [29, 15, 14]


def test_time_format_reads_other_date_layouts(tmp_path):
    table = clean_table()
    table["date"] = [d.strftime("%d/%m/%Y") for d in table["date"]]
    path = write(tmp_path, table, "csv")
    with pytest.raises(ValidationError) as info:
        price_table_dataset(path, features=["signal"])
    assert info.value.key == "path" and "cannot read '01/01/2024' in column 'date' at row 1, line 2" in info.value.reason and "time_format" in info.value.reason
    data = price_table_dataset(path, features=["signal"], time_format="%d/%m/%Y")
    reference = price_table_dataset(write(tmp_path, clean_table(), "csv", "iso"), features=["signal"])
    np.testing.assert_array_equal(data["X_test"], reference["X_test"])


def test_weekends_pass_the_default_gap_rule_and_max_gap_null_allows_any_gap(tmp_path):
    table = clean_table()
    gapped = with_rows(table, list(range(30)) + list(range(40, ROWS)))
    path = write(tmp_path, gapped, "csv")
    with pytest.raises(ValidationError):
        price_table_dataset(path, features=["signal"])
    for max_gap in (None, 18):
        data = price_table_dataset(path, features=["signal"], max_gap=max_gap)
        assert data["X_train"].shape[0] == int((ROWS - 10 - 2) * 0.6)


def test_blank_lines_in_a_csv_are_skipped_and_rows_keep_their_line_numbers(tmp_path):
    table = clean_table()
    table["BBB"][40] = 0.0
    path = write(tmp_path, table, "csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:11] + [""] + lines[11:]) + "\n\n")  # a blank line 12
    with pytest.raises(ValidationError) as info:
        price_table_dataset(path, features=["signal"])
    # Data row 41 is now the 42nd row pyarrow reads (the blank one counts) and sits on line 43.
    assert f"at {table['date'][40]} (row 42, line 43)" in info.value.reason


def test_the_shipped_csv_is_clean_and_matches_the_docstring_example(monkeypatch):
    monkeypatch.chdir(REPO)
    data = price_table_dataset("docs/data/prices_small.csv", features=["risk_index"], lookback=16)
    assert (data["X_train"].shape, data["prices_train"].shape) == ((301, 5, 16), (301, 4))
    assert SHIPPED_CSV.read_text().splitlines()[0] == "date,AAA,BBB,CCC,DDD,risk_index"


# -- the three faults, on CSV and on Parquet ------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_gap_is_refused_naming_both_times_and_rows(tmp_path, fmt):
    table = clean_table()
    gapped = with_rows(table, list(range(30)) + list(range(40, ROWS)))  # two business weeks missing
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, gapped, fmt), features=["signal"])
    error = info.value
    assert error.key == "path"
    before, after = table["date"][29], table["date"][40]
    assert f"gap of 17 days between {before} ({where(table, 30, fmt)}) and {after} ({where(table, 31, fmt)})" in error.reason
    assert "max_gap=5" in error.reason and "median step of 1 day" in error.reason
    assert ("line" in error.reason) == (fmt == "csv")
    assert f"prices.{fmt}" in error.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_duplicate_time_is_refused_naming_the_time_and_both_rows(tmp_path, fmt):
    table = clean_table()
    order = list(range(ROWS))
    order.insert(31, 20)  # data row 21's time again as data row 32, out of order
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, with_rows(table, order), fmt), features=["signal"])
    error = info.value
    assert error.key == "path"
    assert f"duplicate time {table['date'][20]} in column 'date': {where(table, 21, fmt)} and {where(table, 32, fmt)}" in error.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_zero_price_is_refused_naming_the_column_time_and_row(tmp_path, fmt):
    table = clean_table()
    table["BBB"][24] = 0.0
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, fmt), features=["signal"])
    error = info.value
    assert error.key == "path"
    assert f"expected prices > 0 in column 'BBB', got 0 at {table['date'][24]} ({where(table, 25, fmt)}) (in " in error.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_or_negative_price_is_refused_naming_the_row(tmp_path, fmt):
    table = clean_table()
    table["CCC"][9] = None
    table["AAA"][50] = -3.0
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, fmt), features=["signal"])
    assert f"column 'CCC', got a missing value at {table['date'][9]} ({where(table, 10, fmt)})" in info.value.reason
    table["CCC"][9] = 1.0
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, fmt), features=["signal"])
    assert f"column 'AAA', got -3 at {table['date'][50]} ({where(table, 51, fmt)})" in info.value.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_time_or_feature_value_is_refused_naming_the_row(tmp_path, fmt):
    table = clean_table()
    table["signal"][33] = None
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, fmt), features=["signal"])
    assert f"feature column 'signal', got a missing value at {table['date'][33]} ({where(table, 34, fmt)})" in info.value.reason
    table["signal"][33] = 0.5
    table["date"][12] = None
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, fmt), features=["signal"])
    assert info.value.key == "path" and f"missing time in column 'date' at {where(table, 13, fmt)}" in info.value.reason


def test_text_in_a_price_column_is_refused_naming_the_cell(tmp_path):
    table = clean_table()
    table["AAA"][7] = "n/a?"
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, table, "csv"), features=["signal"])
    assert info.value.key == "path"
    assert "expected numbers in price column 'AAA', got 'n/a?' at row 8, line 9" in info.value.reason


def test_a_feature_column_read_as_prices_says_where_it_belongs(tmp_path):
    with pytest.raises(ValidationError) as info:
        price_table_dataset(write(tmp_path, clean_table(), "csv"))  # signal is not listed in features
    assert "column 'signal'" in info.value.reason and "belongs in features" in info.value.reason


# -- bad arguments: column names, keys, files -----------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, key, fragment",
    [
        ({"time_column": "Date"}, "time_column", "no column 'Date' in the file (did you mean 'date'?)"),
        ({"assets": ["AAA", "ZZZ"]}, "assets[1]", "no column 'ZZZ'"),
        ({"assets": ["AAA", "AAA"]}, "assets[1]", "listed twice"),
        ({"assets": []}, "assets", "non-empty list"),
        ({"assets": "date"}, "assets[0]", "the time column"),
        ({"assets": ["AAA"], "features": ["AAA"]}, "assets[0]", "a feature column"),
        ({"features": ["signl"]}, "features[0]", "did you mean 'signal'?"),
        ({"features": [3]}, "features[0]", "a column name"),
        ({"lookback": 0}, "lookback", "an int >= 1"),
        ({"lookback": 55}, "lookback", "at most the 58 usable rows - 5 = 53"),
        ({"max_gap": 0.5}, "max_gap", "a number >= 1"),
        ({"max_gap": "5"}, "max_gap", "a number >= 1"),
        ({"train_fraction": 1.2}, "train_fraction", "a number in (0, 1)"),
        ({"val_start": "2024-02-01"}, "test_start", "split dates come in pairs"),
        ({"val_start": "2024-02-01", "test_start": "2024-02-20", "val_fraction": 0.2}, "val_start", "not both"),
        ({"val_start": "February", "test_start": "2024-02-20"}, "val_start", "ISO 8601 date"),
        ({"val_start": "2024-02-20", "test_start": "2024-02-01"}, "test_start", "a time after val_start"),
        ({"val_start": "2024-03-25", "test_start": "2024-03-26"}, "test_start", "each needs at least 2"),
        ({"val_start": "2023-03-25", "test_start": "2024-03-01"}, "val_start", "0/"),
        ({"val_start": 3, "test_start": 9}, "val_start", "an ISO 8601 date"),
        ({"log_returns": False, "features": [], "assets": list(ASSETS)}, "features", "at least one feature column"),
        ({"time_format": "%d/%m/%Y"}, "time_format", "only for a text time column"),
    ],
)
def test_bad_arguments_are_keyed_by_the_argument(tmp_path, kwargs, key, fragment):
    path = write(tmp_path, clean_table(), "csv")
    kwargs = {"features": ["signal"], **kwargs} if "features" not in kwargs and "assets" not in kwargs else kwargs
    with pytest.raises(ValidationError) as info:
        price_table_dataset(path, **kwargs)
    assert info.value.key == key, info.value
    assert fragment in info.value.reason, info.value.reason


def test_files_that_cannot_be_price_tables_are_keyed_path(tmp_path):
    for path, fragment in [
        (tmp_path / "nope.csv", "file not found"),
        (tmp_path / "prices.xlsx", "expected a file ending in one of .csv"),
    ]:
        with pytest.raises(ValidationError) as info:
            price_table_dataset(path)
        assert info.value.key == "path" and fragment in info.value.reason
    broken = tmp_path / "broken.parquet"
    broken.write_text("date,AAA\n2024-01-01,1\n")
    with pytest.raises(ValidationError) as info:
        price_table_dataset(broken)
    assert info.value.key == "path" and "cannot read" in info.value.reason and "as Parquet" in info.value.reason
    short = write(tmp_path, with_rows(clean_table(), list(range(7))), "csv", "short")
    with pytest.raises(ValidationError) as info:
        price_table_dataset(short, features=["signal"])
    assert info.value.key == "path" and "at least 8 rows" in info.value.reason
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("date,AAA,AAA\n2024-01-01,1,2\n")
    with pytest.raises(ValidationError) as info:
        price_table_dataset(repeated)
    assert info.value.key == "path" and "'AAA' appears more than once" in info.value.reason


# -- run configs ----------------------------------------------------------------------------------

def price_config(path: str, **kwargs) -> dict:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    raw["data"]["kwargs"] = {"path": path, "features": ["signal"], "lookback": 4, **kwargs}
    return raw


def test_a_relative_path_resolves_against_the_config_folder_to_an_absolute_path(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "data").mkdir(parents=True)
    csv = write(folder / "data", clean_table(), "csv")
    monkeypatch.chdir(tmp_path)  # neither the config's folder nor the repo
    config = parse_run_config(price_config("data/prices.csv"), base_dir=folder)
    assert config.data["kwargs"]["path"] == str(csv.resolve())
    assert config.resolved["data"]["kwargs"]["path"] == str(csv.resolve())
    # config_resolved.yaml parses again from any folder (sweeps/evaluate.py reads it with base_dir ".").
    again = parse_run_config(config.resolved, base_dir="/")
    assert again.data["kwargs"]["path"] == str(csv.resolve())


def test_unquoted_yaml_dates_in_loader_kwargs_resolve_to_iso_strings_that_json_can_copy(tmp_path):
    import json

    write(tmp_path, clean_table(), "csv")
    text = yaml.safe_dump(price_config("prices.csv")) + ""
    raw = yaml.safe_load(text.replace("lookback: 4", "lookback: 4\n    val_start: 2024-02-01\n    test_start: 2024-02-20"))
    assert isinstance(raw["data"]["kwargs"]["val_start"], datetime.date)  # what YAML gives
    config = parse_run_config(raw, base_dir=tmp_path)
    assert config.data["kwargs"]["val_start"] == "2024-02-01" and config.data["kwargs"]["test_start"] == "2024-02-20"
    copied = json.loads(json.dumps(config.resolved))  # sweeps/evaluate.py copies the resolved config so
    assert copied["data"]["kwargs"]["val_start"] == "2024-02-01"
    data = price_table_dataset(**config.data["kwargs"])
    n_train = sum(d < datetime.date(2024, 2, 1) for d in clean_table()["date"][1:-1]) - 3  # lookback 4
    assert data["X_train"].shape == (n_train, 4, 4)


@pytest.mark.parametrize("value, fragment", [("missing.csv", "file not found"), (5, "a file path"), ("", "a file path")])
def test_a_missing_or_bad_path_is_a_config_error_at_data_kwargs_path(tmp_path, value, fragment):
    with pytest.raises(ConfigError) as info:
        parse_run_config(price_config(value), base_dir=tmp_path)
    assert info.value.key == "data.kwargs.path" and fragment in info.value.reason


def test_the_shipped_config_reads_the_shipped_csv_from_any_folder(tmp_path, monkeypatch):
    from psann.runs import load_run_config

    monkeypatch.chdir(tmp_path)
    config = load_run_config(SHIPPED_CONFIG)
    assert Path(config.data["kwargs"]["path"]) == SHIPPED_CSV.resolve()


def test_the_run_cli_trains_two_epochs_on_the_shipped_csv_config(tmp_path, monkeypatch):
    from psann.scripts.hisso_log_run import main

    # The shipped config and CSV, copied with the repo's layout, so the relative path is the shipped one.
    config = tmp_path / "configs" / "hisso" / SHIPPED_CONFIG.name
    config.parent.mkdir(parents=True)
    (tmp_path / "docs" / "data").mkdir(parents=True)
    shutil.copy(SHIPPED_CSV, tmp_path / "docs" / "data" / SHIPPED_CSV.name)
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    raw["estimator"]["params"]["epochs"] = 2
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "docs")

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--threads", "1"]) == 0

    (run,) = (tmp_path / "runs").iterdir()
    metrics = yaml.safe_load((run / "metrics.json").read_text())
    assert metrics["status"] == "success" and metrics["epochs_run"] == 2
    assert metrics["portfolio"]["policy"]["cum_return"] is not None
    resolved = yaml.safe_load((run / "config_resolved.yaml").read_text())
    assert resolved["data"]["kwargs"]["path"] == str((tmp_path / "docs" / "data" / SHIPPED_CSV.name).resolve())


def test_the_run_cli_refuses_a_table_with_a_zero_price_before_creating_a_run_folder(tmp_path, capsys):
    from psann.scripts.hisso_log_run import main

    table = clean_table()
    table["AAA"][5] = 0.0
    write(tmp_path, table, "csv")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(price_config("prices.csv")))

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    err = capsys.readouterr().err
    assert f"expected prices > 0 in column 'AAA', got 0 at {table['date'][5]} (row 6, line 7)" in err
