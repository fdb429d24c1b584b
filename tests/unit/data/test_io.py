"""read_json / read_jsonl / read_text: every failure names the file and the place."""

import pytest

from metarag.data.io import read_json, read_jsonl, read_text, require
from metarag.errors import DataError


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}')
    with pytest.raises(DataError, match=r"bad\.json at line 4, column 1: malformed JSON"):
        read_json(path)


def test_duplicate_json_key_is_refused(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"123": {"q": 1}, "123": {"q": 2}}')
    with pytest.raises(DataError, match=r"dup\.json: duplicate key '123'"):
        read_json(path)


def test_non_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond caf\xe9 line\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 2, column 11 .*not valid UTF-8.*0xe9"):
        read_text(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_json(tmp_path / "empty.json")
    with pytest.raises(DataError, match="file not found"):
        read_json(tmp_path / "absent.json")


def test_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"line 3: expected a JSON object"):
        read_jsonl(path)


def test_require_names_missing_and_mistyped_fields():
    with pytest.raises(DataError, match=r"f\.json at data\[0\]: missing field 'question'"):
        require({}, "question", "f.json", "data[0]")
    with pytest.raises(DataError, match=r"data\[0\]\.answers: expected list, got str"):
        require({"answers": "x"}, "answers", "f.json", "data[0]", list)
