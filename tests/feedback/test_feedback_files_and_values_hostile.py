"""More hostile files and values: edited tables, read-only and full disks, odd keys and types.

Each case must end in an error naming the store (or the bad item) and the fix, with
nothing lost, or be read leniently with a logged warning when another tool wrote it.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import traceback
import warnings
from pathlib import Path

import pytest
from fb_helpers import sources
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore, FeedbackStoreError
from llama_index_ragtune.feedback.schema import file_error

np = pytest.importorskip("numpy")


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as s:
        yield s


def _good(store):
    rid = store.record(
        "apple return policy?", retrieved=sources("g1", "e1"), cited_node_ids=["g1"], answer="7"
    )
    store.rate(rid, 1)
    return rid


def _edit(path, *statements):
    raw = sqlite3.connect(path)
    for statement in statements:
        raw.execute(statement)
    raw.commit()
    raw.close()


# ------------------------------------------------------------------ edited files


@pytest.mark.parametrize(
    ("statements", "match"),
    [
        (
            ["DROP TABLE ragtune_meta", "CREATE TABLE ragtune_meta (k TEXT, v TEXT)"],
            r"table ragtune_meta without the columns key and value: not a llama-index",
        ),
        (
            ["DROP INDEX records_by_bundle", "ALTER TABLE records DROP COLUMN bundle_version"],
            r"table records lacks the columns bundle_version",
        ),
        (["ALTER TABLE nodes RENAME COLUMN embed_text TO embedded"], r"nodes lacks .*embed_text"),
        (
            [
                "ALTER TABLE retrieved DROP COLUMN score",
                "UPDATE ragtune_meta SET value = '2' WHERE key = 'schema_version'",
            ],
            r"version 2.*upgrade",  # a newer schema is named as such, not as damage
        ),
    ],
    ids=["meta", "records", "nodes", "newer"],
)
def test_a_store_with_edited_columns_is_refused_naming_the_table(tmp_path, statements, match):
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        _good(store)
    _edit(path, *statements)
    before = path.read_bytes()
    for create in (True, False):  # was: sqlite3.OperationalError "no such column" on first use
        with pytest.raises(FeedbackStoreError, match=rf"feedback.sqlite .*{match}"):
            FeedbackStore(path, create=create)
    assert path.read_bytes() == before  # the edited file is left as it is


def test_a_dangling_symlink_names_the_folder_it_points_into(tmp_path):
    link = tmp_path / "feedback.sqlite"
    link.symlink_to(tmp_path / "gone" / "feedback.sqlite")
    # was: sqlite3.OperationalError "unable to open database file"
    with pytest.raises(FileNotFoundError, match=r"symbolic link to .*gone.*folder .*gone"):
        FeedbackStore(link)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FeedbackStore(link, create=False)
    assert not (tmp_path / "gone").exists()


# ------------------------------------------------------------------ permissions and disks


def _unprivileged(fn, *args):
    """``fn(*args)`` where file permissions apply: in a child running as ``nobody`` when root."""
    if os.geteuid() != 0:
        return fn(*args)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            os.setgid(65534)
            os.setuid(65534)
            queue.put(("ok", fn(*args)))
        except BaseException as exc:  # reported to the parent
            queue.put(("error", f"{exc!r}\n{traceback.format_exc()}"))

    proc = ctx.Process(target=child)
    proc.start()
    status, value = queue.get(timeout=120)
    proc.join(timeout=60)
    assert status == "ok", value
    return value


def _outcome(call):
    try:
        return ("ok", repr(call()))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _as_reader(folder_ro, file_ro, new_file):
    def write(path):
        with FeedbackStore(path) as store:
            return store.record("q")

    def read(path):
        with FeedbackStore(path, create=False) as store:
            return [r.query for r in store]

    def rate(path):
        with FeedbackStore(path) as store:
            store.rate(next(iter(store)).id, -1)

    return {
        "folder_ro_open": _outcome(lambda: read(folder_ro)),
        "file_ro_read": _outcome(lambda: read(file_ro)),
        "file_ro_write": _outcome(lambda: write(file_ro)),
        "file_ro_rate": _outcome(lambda: rate(file_ro)),
        "new_file": _outcome(lambda: write(new_file)),
    }


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_read_only_store_or_folder_is_a_permission_error_naming_the_store():
    base = Path(tempfile.mkdtemp())  # not tmp_path: its parents are private to root
    try:
        os.chmod(base, 0o755)
        paths = {}
        for name, folder_mode, file_mode in (
            ("ro-folder", 0o555, 0o666),
            ("ro-file", 0o777, 0o444),
        ):
            folder = base / name
            folder.mkdir()
            with FeedbackStore(folder / "feedback.sqlite") as store:
                _good(store)
            os.chmod(folder / "feedback.sqlite", file_mode)
            os.chmod(folder, folder_mode)
            paths[name] = folder / "feedback.sqlite"
        result = _unprivileged(
            _as_reader, paths["ro-folder"], paths["ro-file"], base / "ro-folder" / "new.sqlite"
        )
        # was: FeedbackStoreError "is not a readable SQLite database (attempt to write a
        # readonly database); pass the path of a feedback store" for a good store, and raw
        # sqlite3.OperationalError for writes and for a new file
        kind, message = result["folder_ro_open"]
        assert kind == "PermissionError", result
        assert "ro-folder/feedback.sqlite is read-only" in message and "writable" in message
        assert result["file_ro_read"] == ("ok", repr(["apple return policy?"]))
        for key in ("file_ro_write", "file_ro_rate"):
            kind, message = result[key]
            assert kind == "PermissionError" and "ro-file/feedback.sqlite is read-only" in message
        kind, message = result["new_file"]
        assert kind == "PermissionError" and "new.sqlite cannot be opened" in message
        assert not (base / "ro-folder" / "new.sqlite").exists()
        for path in paths.values():  # nothing lost, nothing changed
            os.chmod(path.parent, 0o755)
            os.chmod(path, 0o644)
            with FeedbackStore(path, create=False) as store:
                [record] = store
                assert record.query == "apple return policy?" and record.rating == 1
    finally:
        for folder in base.iterdir():
            os.chmod(folder, 0o755)
        shutil.rmtree(base)


def test_writes_sqlite_refuses_are_os_errors_naming_the_store_and_lose_nothing(store):
    rid = _good(store)
    store._conn.execute("PRAGMA max_page_count = 8")  # a full disk, as SQLite reports it
    # was: a bare sqlite3.OperationalError "database or disk is full"
    with pytest.raises(OSError, match=r"feedback.sqlite could not be written .*disk is full") as e:
        store.record("q", answer="x" * 200_000)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match=r"record_many: .*disk is full.*entries 0-1 are stored"):
        store.record_many(
            [{"query": "a"}, {"query": "b"}, {"query": "c"}, {"query": "d" * 200_000}],
            batch_size=2,
        )
    assert [r.query for r in store] == ["apple return policy?", "a", "b"]
    store._conn.execute("PRAGMA max_page_count = 1000000")
    store._conn.execute("PRAGMA query_only = ON")  # what a read-only file gives a writer
    for call in (lambda: store.record("q"), lambda: store.rate(rid, -1)):
        with pytest.raises(PermissionError, match=r"feedback.sqlite is read-only.*writable"):
            call()
    store._conn.execute("PRAGMA query_only = OFF")
    assert len(store) == 3 and store.get(rid).rating == 1


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("attempt to write a readonly database", PermissionError),
        ("database or disk is full", OSError),
        ("disk I/O error", OSError),
        ("no such table: records", None),  # not the file system's: left as it is
        ("database is locked", None),
    ],
)
def test_only_the_file_systems_refusals_become_os_errors(tmp_path, message, expected):
    error = file_error(sqlite3.OperationalError(message), tmp_path / "feedback.sqlite")
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected and "feedback.sqlite" in str(error)
    assert file_error(ValueError(message), tmp_path / "feedback.sqlite") is None


def test_record_many_keeps_the_error_type_and_says_what_is_stored(tmp_path):
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path, timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)

    def entries():
        yield {"query": "q0"}
        yield {"query": "q1"}  # the first batch is committed before the next one is asked for
        holder.execute("BEGIN IMMEDIATE")  # another writer takes the lock and keeps it
        yield {"query": "q2"}
        yield {"query": "q3"}

    # was: the bare TimeoutError, which does not say that q0 and q1 are stored
    with pytest.raises(TimeoutError, match=r"record_many: .*locked.*entries 0-1 are stored"):
        store.record_many(entries(), batch_size=2)
    holder.execute("ROLLBACK")
    holder.close()
    assert [r.query for r in store] == ["q0", "q1"]
    store.close()


def test_record_many_commits_what_a_failing_iterable_gave_before_it_failed(store):
    failure = RuntimeError("the import file is cut off")

    def entries():
        for i in range(7):
            yield {"query": f"q{i}"}
        raise failure

    with pytest.raises(RuntimeError) as raised:
        store.record_many(entries(), batch_size=5)
    assert raised.value is failure
    # was: q5 and q6 silently dropped while q0-q4 were stored
    assert [r.query for r in store] == [f"q{i}" for i in range(7)]
    with pytest.raises(TypeError, match=r"entries must be a list .* got dict; .*\[entry\]"):
        store.record_many({"query": "one record"})  # was: "entry 0: ... got str"
    with pytest.raises(TypeError, match="entries must be a list"):
        store.record_many(None)
    assert len(store) == 7


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({1: "a", "1": "b"}, r"key 1 of metadata is not a string"),
        ({"tenant": {2: "x", "2": "y"}}, r"key 2 of metadata\['tenant'\] is not a string"),
        ({"rows": [{None: 1}]}, r"key None of metadata\['rows'\]\[0\] is not a string"),
        ({True: "yes"}, r"key True of metadata is not a string"),
    ],
)
def test_metadata_keys_json_would_rename_or_merge_are_refused(store, metadata, match):
    rid = _good(store)
    # was: stored as {"1": "b"}: the key renamed and the value "a" silently lost
    with pytest.raises(ValueError, match=match):
        store.record("q", metadata=metadata)
    with pytest.raises(ValueError, match=r"entry 0: .*" + match):
        store.record_many([{"query": "q", "metadata": metadata}])
    engine = _Fixed(Response("a"))
    with pytest.raises(ValueError, match=match):
        FeedbackQueryEngine(engine, store, metadata=metadata)
    assert [r.id for r in store] == [rid]


@pytest.mark.parametrize(
    "bad", [np.True_, np.False_, np.array([1]), np.array([1, -1]), complex(1, 0), "1"]
)
def test_numpy_bools_arrays_and_complex_numbers_are_not_ratings(store, bad):
    rid = _good(store)
    # was: np.True_ stored as +1; arrays and complex numbers raised errors naming no argument
    with pytest.raises(ValueError, match=r"rating must be \+1 \(up\), -1 \(down\)"):
        store.rate(rid, bad)
    with pytest.raises(ValueError, match=r"rating must be \+1"):
        store.record("q", rating=bad)
    with pytest.raises(ValueError, match="rating filter must be 1, -1, 'unrated'"):
        store.count(rating=bad)
    assert len(store) == 1 and store.get(rid).rating == 1
    store.rate(rid, np.int64(-1))  # a NumPy integer is a number: still fine
    assert store.get(rid).rating == -1 and store.count(rating=np.int64(-1)) == 1


def test_numpy_numbers_are_numbers_for_every_numeric_argument(tmp_path):
    # was: np.float32 / np.int64 refused ("must be a number ... got np.float32(0.2)") for
    # latency_ms, created_at, timeout, eval_fraction, seed and the max_* caps, while
    # np.float64 (a float subclass) passed
    with FeedbackStore(tmp_path / "f.sqlite", timeout=np.float32(5)) as store:
        rid = store.record(
            "apple return policy?",
            retrieved=sources("g1", "e1"),
            cited_node_ids=["g1"],
            answer="[1] 7 days.",
            rating=1,
            latency_ms=np.float32(12.5),
            created_at=np.int64(1_700_000_000),
        )
        record = store.get(rid)
        assert record.latency_ms == 12.5 and record.created_at.timestamp() == 1_700_000_000
        assert type(record.latency_ms) is float
        store.record_many(
            [{"query": "warranty?", "retrieved": sources("e1"), "answer": "1 year"}],
            batch_size=np.int64(10),
        )
        assert len(store) == 2
        dataset = store.to_retrieval_dataset(eval_fraction=np.float32(0.0), seed=np.int64(0))
        assert len(dataset) == 1
        store.to_preference_pairs(
            max_source_chars=np.int64(200), max_pairs_per_group=np.int64(2), seed=np.int64(0)
        )
    with pytest.raises(TypeError, match="latency_ms must be a number"):
        FeedbackStore(tmp_path / "g.sqlite").record("q", latency_ms=np.bool_(True))


class _Fixed(BaseQueryEngine):
    """An engine that always answers ``response``."""

    def __init__(self, response):
        self.response = response
        super().__init__(callback_manager=None)

    def _get_prompt_modules(self):
        return {}

    def _query(self, query_bundle):
        return self.response

    async def _aquery(self, query_bundle):
        return self.response


def test_a_cited_id_no_node_can_have_is_dropped_and_the_answer_still_recorded(store):
    response = Response("7 days [1].", sources("g1", "e1"), {"cited_node_ids": [["g1"], "g1", {}]})
    with pytest.warns(UserWarning, match=r"not among its source_nodes: \[\['g1'\], \{\}\]"):
        answered = FeedbackQueryEngine(_Fixed(response), store).query("apple?")
    # was: "unhashable type: 'list'": the whole answer went unrecorded
    record = store.get(answered.metadata["feedback_id"])
    assert record.cited_node_ids == ("g1",) and record.answer == "7 days [1]."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rid = store.record_response("apple?", response)  # was: a raw TypeError
    assert store.get(rid).cited_node_ids == ("g1",)


# ------------------------------------------------------------------ rows another tool wrote


def test_preference_pairs_leave_out_a_question_whose_source_text_is_gone(store, caplog):
    for query, node in (("apple?", "g1"), ("laptop?", "e2")):
        for answer, rating in (("good [1]", 1), ("bad [1]", -1)):
            store.record(
                query, retrieved=sources(node), cited_node_ids=[node], answer=answer, rating=rating
            )
    assert len(store.to_preference_pairs()) == 2
    _edit(store.path, "DELETE FROM nodes WHERE node_id = 'g1'")  # a hand-made clean-up
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.export"):
        pairs = store.to_preference_pairs()  # was: KeyError ('g1', '<hash>')
    assert [row["chosen"][0]["content"] for row in pairs] == ["good [1]"]
    assert "'g1'" in caplog.text and "laptop" not in caplog.text


@pytest.mark.parametrize(
    ("sql", "column"),
    [
        ("UPDATE records SET query = CAST(query AS BLOB) WHERE id = :rid", "records.query"),
        ("UPDATE records SET answer = CAST(answer AS BLOB) WHERE id = :rid", "records.answer"),
        (
            "UPDATE records SET bundle_version = CAST('v1' AS BLOB) WHERE id = :rid",
            "records.bundle_version",
        ),
        (
            "UPDATE retrieved SET node_id = CAST(node_id AS BLOB) WHERE record_id = :rid",
            "retrieved.node_id",
        ),
        (
            "UPDATE cited SET node_id = CAST(node_id AS BLOB) WHERE record_id = :rid",
            "cited.node_id",
        ),
        ("UPDATE nodes SET embed_text = CAST(embed_text AS BLOB)", "nodes.embed_text"),
        ("UPDATE nodes SET text = CAST(text AS BLOB)", "nodes.text"),
    ],
)
def test_blobs_another_tool_wrote_in_text_columns_are_read_as_text(store, caplog, sql, column):
    rid = _good(store)
    store.record("apple return policy?", retrieved=sources("g1", "e1"), answer="no", rating=-1)
    raw = sqlite3.connect(store.path)
    raw.execute(sql, {"rid": rid})
    raw.commit()
    raw.close()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.sql"):
        # was: TypeError deep inside (unicodedata.normalize, json.dumps, check_text)
        records = list(store.records())
        record = store.get(rid)
        stats = store.stats()
        train = store.to_retrieval_dataset()
        pairs = store.to_preference_pairs()
        json.dumps([r.to_dict() for r in records])
        json.dumps(stats.to_dict())
    assert record.query == "apple return policy?" and record.answer == "7"
    assert record.retrieved_node_ids == ["g1", "e1"] and record.cited_node_ids == ("g1",)
    assert train.relevant_docs == {next(iter(train.queries)): ["g1"]}
    assert train.corpus["g1"].endswith("within 7 days with the receipt.")
    assert len(pairs) == 1 and isinstance(pairs[0]["prompt"][1]["content"], str)
    assert all(isinstance(k, str) for k in stats.bundle_versions)
    assert column in caplog.text and "blob" in caplog.text
