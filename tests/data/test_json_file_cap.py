"""A whole-file JSON document (SQuAD) is capped: a huge file is refused from its size.

Was: ``read_json_file`` read any file whole, so a multi-gigabyte file (the wrong file, a
concatenation) took twice its size in memory before failing as "malformed JSON".
"""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.qa import load_squad_v2
from llama_index_ragtune.data.reading import MAX_JSON_FILE_BYTES, read_json_file

SQUAD = {"version": "v2.0", "data": []}


def _sparse(path: Path, size: int) -> Path:
    """A valid JSON head, then zeros up to ``size`` bytes: nothing big is written to disk."""
    path.write_bytes(json.dumps(SQUAD).encode())
    os.truncate(path, size)
    return path


def test_a_file_over_the_cap_is_refused_from_its_size_without_reading_it(tmp_path):
    path = _sparse(tmp_path / "train-v2.0.json", MAX_JSON_FILE_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(DataError):
            read_json_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the old reader held the whole file (and its decoded text)
    with pytest.raises(DataError) as info:
        load_squad_v2(path)
    message = str(info.value)
    assert info.value.path == path and f"{MAX_JSON_FILE_BYTES + 1:,} bytes" in message
    assert "max_bytes=None" in message and "JSONL" in message


def test_the_cap_is_generous_and_a_file_at_it_still_reads(tmp_path):
    assert MAX_JSON_FILE_BYTES >= 20 * 42_123_633  # the real SQuAD 2.0 train file, 20 times
    text = json.dumps(SQUAD)
    path = tmp_path / "dev.json"
    path.write_text(text, encoding="utf-8")
    assert read_json_file(path, max_bytes=len(text)) == SQUAD
    with pytest.raises(DataError, match=f"is {len(text) + 1:,} bytes, over the {len(text):,}"):
        path.write_text(text + "\n", encoding="utf-8")
        read_json_file(path, max_bytes=len(text))
    assert read_json_file(path, max_bytes=None) == SQUAD


def test_a_gzip_file_is_capped_on_what_it_decompresses_to(tmp_path):
    path = tmp_path / "dev.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"data": [], "pad": " " * 5000}).encode()))
    assert path.stat().st_size < 1000  # small on disk, 5 kB once decompressed
    with pytest.raises(DataError, match="decompresses to more than the 1,000-byte cap") as info:
        read_json_file(path, max_bytes=1000)
    assert info.value.path == path
    assert read_json_file(path, max_bytes=10_000)["data"] == []
