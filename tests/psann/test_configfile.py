"""The one strict config reader: every problem of the file itself, keyed, before any work."""

from __future__ import annotations

import pytest

from psann.configfile import MAX_CONFIG_BYTES, read_config
from psann.errors import ValidationError


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_a_good_yaml_and_json_file_read_as_dicts(tmp_path):
    assert read_config(_write(tmp_path, "a.yaml", "a: {b: 1}\nc: [1, 2.5]\n")) == {"a": {"b": 1}, "c": [1, 2.5]}
    assert read_config(_write(tmp_path, "a.json", '{"a": {"b": 1}}')) == {"a": {"b": 1}}


@pytest.mark.parametrize(
    "name, data, key, reason",
    [
        ("syntax.yaml", "a: {b: 1\n", None, "not valid YAML at line"),
        ("bytes.yaml", b"a: caf\xe9\n", None, "not UTF-8 text (byte 6"),
        ("tag.yaml", "a: !!python/object/apply:os.system ['echo x']\n", None, "not valid YAML"),
        ("dup.yaml", "a: 1\nb: 2\na: 3\n", None, "duplicate key 'a' at line 3"),
        ("nested_dup.yaml", "a:\n  x: 1\n  x: 2\n", None, "duplicate key 'x'"),
        ("dup.json", '{"a": 1, "a": 2}', None, "duplicate key 'a'"),
        ("bad.json", '{"a": 1,}', None, "not valid JSON"),
        ("nan.yaml", "a:\n  lr: .nan\n", "a.lr", "expected a finite number"),
        ("inf.yaml", "s:\n  - {t: 1}\n  - {t: -.inf}\n", "s[1].t", "expected a finite number"),
        ("nan.json", '{"a": NaN}', "a", "expected a finite number"),
    ],
)
def test_every_problem_of_the_file_is_a_keyed_error(tmp_path, name, data, key, reason):
    path = _write(tmp_path, name, data)
    with pytest.raises(ValidationError) as info:
        read_config(path)
    assert info.value.key == (key or str(path))
    assert reason in info.value.reason


def test_a_missing_file_a_directory_and_a_huge_file_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="file not found"):
        read_config(tmp_path / "none.yaml")
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ValidationError, match="is a directory"):
        read_config(tmp_path / "d.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ValidationError, match="at most"):
        read_config(big)


def test_no_python_object_is_ever_built(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, "evil.yaml", f"a: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValidationError):
        read_config(path)
    assert not marker.exists()
