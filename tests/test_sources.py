import pytest

from instaseg.data.errors import DataError
from instaseg.data.sources import list_images


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_glob_file_and_list(tmp_path):
    a, b = touch(tmp_path / "b.png"), touch(tmp_path / "a.JPG")
    touch(tmp_path / "notes.txt")
    nested = touch(tmp_path / "sub" / "c.png")
    assert list_images(tmp_path) == [b, a]  # sorted by name, images only, not recursive
    assert list_images(str(tmp_path / "*.png")) == [a]
    assert list_images(str(tmp_path / "**" / "*.png")) == [a, nested]
    assert list_images(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # explicit file kept
    assert list_images([a, tmp_path]) == [a, b]  # duplicates dropped, first order kept


def test_missing_and_empty_sources_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.png: not found"):
        list_images(tmp_path / "nope.png")
    with pytest.raises(DataError, match="no images found"):
        list_images(str(tmp_path / "*.png"))
