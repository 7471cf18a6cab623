"""The one folder-name rule (psann.names): a name never escapes its parent folder."""

from __future__ import annotations

import pytest

from psann.errors import ValidationError
from psann.names import check_folder_name, check_output_dir


@pytest.mark.parametrize("name", ["run", "wave-lr3_x.1", "été", "a" * 255])
def test_good_names_pass(name):
    assert check_folder_name(name, "--name") == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "folder name"),
        (".", "folder name"),
        ("..", "folder name"),
        (".hidden", "leading '.'"),
        ("a/b", "one path component"),
        ("..\\x", "one path component"),
        ("a\0b", "one path component"),
        ("tab\tname", "control characters"),
        ("a" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
        (7, "folder name"),
    ],
)
def test_bad_names_are_refused_naming_the_key(name, reason):
    with pytest.raises(ValidationError) as info:
        check_folder_name(name, "stages[1].name")
    assert info.value.key == "stages[1].name" and reason in info.value.reason


def test_reserve_keeps_room_for_a_suffix():
    check_folder_name("a" * 250, "--name", reserve=4)
    with pytest.raises(ValidationError, match="at most 251 bytes"):
        check_folder_name("a" * 252, "--name", reserve=4)


def test_output_dir_missing_parents_are_fine_a_file_is_not(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "--storage") == tmp_path / "a" / "b"
    (tmp_path / "f").write_text("")
    with pytest.raises(ValidationError, match="is not a folder") as info:
        check_output_dir(tmp_path / "f" / "b", "--storage")
    assert info.value.key == "--storage"
    with pytest.raises(ValidationError, match="longer than the filesystem allows"):
        check_output_dir(tmp_path / ("x" * 300), "--storage")
