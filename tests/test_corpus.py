from __future__ import annotations

import json

import pytest

from ragtune import InputError
from ragtune.corpus import chunk_text, load_sources


def _tok(text):
    # whitespace tokens with offsets
    out, i = [], 0
    for w in text.split():
        j = text.index(w, i)
        out.append((j, j + len(w)))
        i = j + len(w)
    return out


def test_chunking_overlaps_and_keeps_text():
    text = " ".join(f"w{i}" for i in range(10))
    chunks = chunk_text(text, _tok(text), 4, 1)
    assert chunks[0] == "w0 w1 w2 w3" and chunks[1] == "w3 w4 w5 w6"
    assert chunks[-1].endswith("w9")


def test_text_dir_ids_stable(tmp_path):
    (tmp_path / "a.md").write_text("one two three four five six", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("seven eight", encoding="utf-8")
    docs = load_sources([tmp_path], _tok, 4, 1)
    assert [d.id for d in docs] == ["a.md#0", "a.md#1", "sub/b.txt#0"]
    assert [d.id for d in load_sources([tmp_path], _tok, 4, 1)] == [d.id for d in docs]


def test_an_empty_text_file_is_skipped_with_a_warning_not_an_error(tmp_path, caplog):
    (tmp_path / "a.md").write_text("one two", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    docs = load_sources([tmp_path], _tok, 4, 1)
    assert [d.id for d in docs] == ["a.md#0"] and "skipped" in caplog.text and "empty.txt: empty file" in caplog.text
    (tmp_path / "a.md").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="every text file in it is empty"):
        load_sources([tmp_path], _tok, 4, 1)


def test_beir_embeds_title_and_text(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "T", "text": "body", "metadata": {}}) + "\n")
    (doc,) = load_sources([tmp_path], None)
    assert doc.id == "1" and doc.embed_text == "T body"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', ":2: malformed JSON"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', ":2: duplicate document id 'a'"),
        ('{"id": "a", "text": "   "}\n', ":1: document 'a' has empty text"),
        ('{"text": "x"}\n', ":1: missing document id"),
        ('[1, 2]\n', ":1: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, needle):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        load_sources([path], None)
    assert str(path) in str(exc.value) and needle in str(exc.value)


def test_missing_path_and_non_utf8(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        load_sources([tmp_path / "nope"], None)
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(InputError, match=r"bad\.txt: not UTF-8"):
        load_sources([tmp_path], _tok)
    with pytest.raises(InputError, match="unsupported source"):
        (tmp_path / "x.csv").write_text("a,b")
        load_sources([tmp_path / "x.csv"], None)
