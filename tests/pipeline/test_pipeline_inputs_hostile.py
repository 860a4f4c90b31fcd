"""Hostile inputs to the tuning pipeline other than the documents: the queries file, the
settings, the work folder's state and where ``--out`` points. Each is a clear error naming
the item, raised before anything is embedded or trained, or kept exactly as documented."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline import PipelineConfig, PipelineStateError, TuningPipeline, steps
from llama_index_ragtune.pipeline.queries import load_queries
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents

GOLD = [{"doc_id": "grocery/returns.md", "section": "Returns > Perishable items"}]
ANSWERABLE = {"id": "a", "question": "apple return policy?", "gold": GOLD, "answer": "48 h"}
UNANSWERABLE = {"id": "u", "question": "lobsters?", "answerable": False}


@pytest.fixture(scope="module")
def nodes(tiny_corpus):
    return parse_documents(read_documents(tiny_corpus["docs"]), tokenizer=None)


@pytest.fixture
def no_index(monkeypatch):
    """The index step fails the test: bad input must be found before it."""

    def index(ctx):
        raise AssertionError("the index step ran")

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "index", index)


def _file(tmp_path, *rows):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(encoder, **overrides):
    return PipelineConfig(encoder_model=encoder, show_progress=False, **overrides)


# ---------------------------------------------------------------------- the queries file


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("filters", [], r"'filters' must be an object \{key: value\}, got \[\]"),
        ("filters", False, r"'filters' must be an object \{key: value\}, got False"),
        ("filters", 0, r"'filters' must be an object \{key: value\}, got 0"),
        ("gold", False, r"'gold' must be a list of references, got bool"),
        ("gold", 0, r"'gold' must be a list of references, got int"),
        ("gold", "", r"'gold' must be a list of references, got str"),
    ],
)
def test_a_falsy_value_of_the_wrong_type_is_not_read_as_empty(
    tmp_path, nodes, field, value, message
):
    path = _file(tmp_path, UNANSWERABLE, {**UNANSWERABLE, "id": "v", field: value})
    with pytest.raises(DataError, match=rf"q\.jsonl:2: {message}"):
        load_queries(path, nodes)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {**ANSWERABLE, "question": "ab\x00cd"},
            "'question' contains the control character U+0000",
        ),
        (
            {**ANSWERABLE, "question": "\x01\x02"},
            "'question' contains the control character U+0001",
        ),
        ({**ANSWERABLE, "answer": "a\x00b"}, "'answer' contains the control character U+0000"),
        ({**ANSWERABLE, "id": "a\x1bb"}, "'id' contains the control character U+001B"),
        ({**ANSWERABLE, "question": "\u200b\u200b"}, "'question' has no visible character"),
        ({**ANSWERABLE, "question": "\ufeff \u2060"}, "'question' has no visible character"),
    ],
)
def test_control_characters_and_invisible_questions_are_errors(tmp_path, nodes, row, message):
    path = _file(tmp_path, row)
    with pytest.raises(DataError, match=re.escape(f"q.jsonl:1: {message}")):
        load_queries(path, nodes)


def test_tabs_newlines_and_unicode_in_a_question_are_kept(tmp_path, nodes):
    path = _file(tmp_path, {**ANSWERABLE, "question": "Äpfel\tzurückgeben?\n"})
    assert load_queries(path, nodes)[0].question == "Äpfel\tzurückgeben?"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"store": "bakery"}, r"no node has store = 'bakery'"),
        ({"store": "Grocery"}, r"no node has store = 'Grocery'"),
        ({"store": 5}, r"no node has store = 5"),
        ({"store": ""}, r"no node has store = ''"),
        ({"filters": {"file_path": "nope.md"}}, r"no node has file_path = 'nope.md'"),
    ],
)
def test_a_filter_no_node_passes_is_an_error_listing_the_values(tmp_path, nodes, extra, message):
    """An unanswerable question asked of an empty corpus would be a free refusal."""
    path = _file(tmp_path, {**UNANSWERABLE, **extra})
    with pytest.raises(DataError, match=rf"q\.jsonl:1: {message}") as info:
        load_queries(path, nodes)
    assert "would be asked of no document" in str(info.value)
    if "store" in extra:
        assert "its values are ['electronics', 'grocery']" in str(info.value)


def test_filters_that_no_node_passes_together_are_an_error(tmp_path, nodes):
    # both values exist, but no grocery page is in the mobile department
    row = {**UNANSWERABLE, "filters": {"store": "grocery", "department": "mobile"}}
    with pytest.raises(DataError, match=r"q\.jsonl:1: no node passes all of the filters"):
        load_queries(_file(tmp_path, row), nodes)


def test_store_contradicting_the_filters_is_an_error(tmp_path, nodes):
    row = {**ANSWERABLE, "store": "grocery", "filters": {"store": "electronics"}}
    with pytest.raises(DataError, match=r"q\.jsonl:1: 'store' 'grocery' contradicts 'filters'"):
        load_queries(_file(tmp_path, row), nodes)
    same = {**ANSWERABLE, "store": "grocery", "filters": {"store": "grocery"}}
    assert load_queries(_file(tmp_path, same), nodes)[0].filters == {"store": "grocery"}


def test_contradicting_labels_for_one_question_are_an_error(tmp_path, nodes):
    twin = {**UNANSWERABLE, "question": "  Apple RETURN policy? "}
    with pytest.raises(DataError, match=r"q\.jsonl:2: the question .* is marked unanswerable") as e:
        load_queries(_file(tmp_path, ANSWERABLE, twin), nodes)
    assert "not on line 1" in str(e.value)
    # the same text asked of another store is another question: both kept
    other = {**twin, "store": "electronics"}
    kept = load_queries(_file(tmp_path, ANSWERABLE, other), nodes)
    assert [(q.id, q.answerable, q.filters) for q in kept] == [
        ("a", True, {}),
        ("u", False, {"store": "electronics"}),
    ]


# ---------------------------------------------------------------------- the split, before the index


def _corpus_rows(tiny_corpus, change):
    rows = [json.loads(x) for x in tiny_corpus["queries"].read_text().splitlines()]
    return [change(r) for r in rows]


def _unanswerable(row):
    return {**row, "gold": [], "answerable": False, "answer": None}


@pytest.mark.parametrize(
    ("change", "skip", "message"),
    [
        (_unanswerable, None, "no answerable training question with gold"),
        (
            lambda r: {**r, "split": "test" if r["answerable"] else "train"},
            None,
            "no answerable training question with gold",
        ),
        (
            lambda r: {**r, "split": "train" if r["answerable"] else "test"},
            None,
            "no answerable test question with gold",
        ),
        (
            _unanswerable,
            "encoder,fusion,reranker,decoder",
            "no answerable test question with gold",
        ),
    ],
)
def test_a_split_a_step_cannot_use_fails_before_the_index(
    tiny_corpus, tiny_encoder_path, tmp_path, no_index, change, skip, message
):
    path = _file(tmp_path, *_corpus_rows(tiny_corpus, change))
    out = tmp_path / "o"
    pipeline = TuningPipeline(
        tiny_corpus["docs"], out, queries=path, config=_config(tiny_encoder_path), skip=skip
    )
    with pytest.raises(DataError, match=message) as info:
        pipeline.run()
    assert info.value.path == path and "skip" in str(info.value)
    assert not out.exists()


def test_a_split_is_accepted_when_the_steps_needing_it_are_skipped(
    tiny_corpus, tiny_encoder_path, tmp_path
):
    path = _file(tmp_path, *_corpus_rows(tiny_corpus, _unanswerable))
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        tmp_path / "o",
        queries=path,
        config=_config(tiny_encoder_path),
        skip="encoder,fusion,reranker,evaluate",
    )
    pipeline.run(until="parse")
    assert pipeline.context.state.done("parse")


def test_a_cli_run_without_test_answers_is_one_line_before_the_index(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index
):
    change = lambda r: {**r, "split": "train" if r["answerable"] else "test"}  # noqa: E731
    path = _file(tmp_path, *_corpus_rows(tiny_corpus, change))
    out = tmp_path / "o"
    argv = ["tune", "--docs", str(tiny_corpus["docs"]), "--queries", str(path)]
    code = main([*argv, "--encoder", tiny_encoder_path, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"ragtune tune: error: {path}: no answerable test question with gold" in err
    assert not out.exists()


# ---------------------------------------------------------------------- where --out points


def _docs(tiny_corpus, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(tiny_corpus["docs"], docs)
    return docs


@pytest.mark.parametrize("where", [".", "runs", "runs/deep"])
def test_out_inside_the_documents_folder_is_an_error(tiny_corpus, tmp_path, where):
    docs = _docs(tiny_corpus, tmp_path)
    before = sorted(p.name for p in docs.rglob("*"))
    with pytest.raises(ValueError, match="is inside the documents folder") as info:
        TuningPipeline(docs, docs / where, queries=tiny_corpus["queries"])
    assert "--out" in str(info.value) and str(docs) in str(info.value)
    assert sorted(p.name for p in docs.rglob("*")) == before


def test_a_work_dir_inside_the_documents_folder_is_an_error(tiny_corpus, tmp_path):
    docs = _docs(tiny_corpus, tmp_path)
    with pytest.raises(ValueError, match="the work folder .* is inside the documents folder"):
        TuningPipeline(docs, tmp_path / "o", work_dir=docs / "w")


def test_inputs_inside_the_work_folder_are_never_cleared(tiny_corpus, tmp_path):
    """A fresh run clears the work folder: documents or questions in it would be deleted."""
    work = tmp_path / "o" / "work"
    docs = work / "docs"
    shutil.copytree(tiny_corpus["docs"], docs)
    (work / "state.json").write_text(json.dumps({"format": "ragtune-pipeline-state", "steps": {}}))
    with pytest.raises(ValueError, match="the documents folder .* is inside the work folder"):
        TuningPipeline(docs, tmp_path / "o")
    queries = work / "q.jsonl"
    shutil.copy(tiny_corpus["queries"], queries)
    with pytest.raises(ValueError, match="the queries file .* is inside the work folder"):
        TuningPipeline(tiny_corpus["docs"], tmp_path / "o", queries=queries)
    assert docs.is_dir() and queries.is_file()


def test_a_work_dir_that_is_a_file_is_named(tiny_corpus, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"work_dir .*f is a file; pass a folder"):
        TuningPipeline(tiny_corpus["docs"], tmp_path / "o", work_dir=tmp_path / "f")


def test_cli_out_inside_docs_is_one_line_and_writes_nothing(
    tiny_corpus, tmp_path, capsys, no_index
):
    docs = _docs(tiny_corpus, tmp_path)
    code = main(["tune", "--docs", str(docs), "--out", str(docs / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"ragtune tune: error: --out {docs / 'runs'} is inside the documents folder" in err
    assert not (docs / "runs").exists()


# ---------------------------------------------------------------------- --resume with a bad state


@pytest.fixture
def parsed(tiny_corpus, tiny_encoder_path, tmp_path):
    out = tmp_path / "o"
    config = _config(tiny_encoder_path)
    TuningPipeline(tiny_corpus["docs"], out, queries=tiny_corpus["queries"], config=config).run(
        until="parse"
    )

    def resume():
        return TuningPipeline(
            tiny_corpus["docs"], out, queries=tiny_corpus["queries"], config=config, resume=True
        )

    return out / "work" / "state.json", resume


@pytest.mark.parametrize(
    "steps_value", [[], None, "missing", {"parse": "done"}, {"parse": ["done"]}]
)
def test_a_state_file_with_damaged_steps_is_a_state_error(parsed, steps_value):
    state_path, resume = parsed
    data = json.loads(state_path.read_text())
    if steps_value == "missing":
        del data["steps"]
    else:
        data["steps"] = steps_value
    state_path.write_text(json.dumps(data))
    with pytest.raises(PipelineStateError, match=r"state\.json is damaged \(its 'steps'") as info:
        resume().run(until="parse")
    assert "without --resume" in str(info.value)


def test_a_finished_step_whose_output_is_gone_is_a_state_error(parsed):
    state_path, resume = parsed
    (state_path.parent / "nodes.json").unlink()
    with pytest.raises(PipelineStateError, match=r"output is gone: parse \(nodes\.json\)"):
        resume().run(until="parse")


def test_the_cli_reports_a_damaged_state_in_one_line(
    parsed, tiny_corpus, tiny_encoder_path, capsys, no_index
):
    state_path, _ = parsed
    state_path.write_text(json.dumps({"format": "ragtune-pipeline-state", "format_version": 1}))
    argv = ["tune", "--docs", str(tiny_corpus["docs"]), "--queries", str(tiny_corpus["queries"])]
    out = state_path.parent.parent
    code = main([*argv, "--encoder", tiny_encoder_path, "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"ragtune tune: error: {state_path} is damaged" in err


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_fraction", "0.2", "test_fraction must be a number, got str '0.2'"),
        ("dev_fraction", None, "dev_fraction must be a number, got NoneType None"),
        ("p_no_gold", True, "p_no_gold must be a number, got bool True"),
        ("promotion_margin", "0.01", "promotion_margin must be a number or None"),
        ("seed", 1.5, "seed must be a whole number, got float 1.5"),
        ("seed", "7", "seed must be a whole number, got str '7'"),
        ("dpo", "no", "dpo must be True or False, got str 'no'"),
        ("show_progress", 0, "show_progress must be True or False, got int 0"),
        ("encoder_args", [("lr", 1)], "encoder_args must be a dict of settings"),
        ("decoder_args", None, "decoder_args must be a dict of settings"),
        ("reranker_args", {1: 2}, r"reranker_args keys must be setting names, got \[1\]"),
        ("encoder_model", 5, "encoder_model must be a folder or hub id, or None"),
        ("group_key", ["store"], "group_key must be a metadata key or None"),
        ("device", 0, "device must be a torch device name"),
        ("curated_keys", "store", r"curated_keys must be a list of names, got 'store' \(write"),
        ("force_promotion", "encoder", "force_promotion must be a list of names"),
        ("curated_keys", ["store", 1], "curated_keys must hold strings"),
    ],
)
def test_settings_of_the_wrong_type_are_type_errors_naming_the_field(field, value, message):
    with pytest.raises(TypeError, match=rf"PipelineConfig\.{message}"):
        PipelineConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "settings", "message"),
    [
        ("encoder_args", {"num_train_epochs": float("nan")}, "num_train_epochs must be a finite"),
        ("decoder_args", {"learning_rate": 0}, "learning_rate must be a finite number > 0"),
        ("reranker_args", {"per_device_train_batch_size": 0}, "batch_size must be a whole number"),
        ("decoder_args", {"num_train_epochs": 0}, "num_train_epochs must be > 0 when max_steps"),
    ],
)
def test_engine_settings_that_cannot_train_fail_when_the_config_is_built(field, settings, message):
    """Was: accepted, then the cost estimate failed on ``int(nan)`` after the data step, or
    the engine refused them only when its step began."""
    with pytest.raises(ValueError, match=rf"PipelineConfig: {field}\.\w*{message}"):
        PipelineConfig(**{field: settings})
    # settings that train are kept as given
    assert PipelineConfig(**{field: {"max_steps": 2, "num_train_epochs": 0}}).__dict__[field] == {
        "max_steps": 2,
        "num_train_epochs": 0,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_fraction", float("nan"), "test_fraction must be a finite number"),
        ("promotion_margin", float("inf"), "promotion_margin must be a finite number"),
        ("max_test_questions", True, "max_test_questions must be None or a whole number >= 1"),
        ("max_synthetic_nodes", False, "max_synthetic_nodes must be None or a whole number"),
        ("max_source_chars", 2.5, "max_source_chars must be None or a whole number >= 1"),
        ("max_source_chars", "800", "max_source_chars must be None or a whole number >= 1"),
        ("max_source_chars", float("nan"), "max_source_chars must be None or a whole number"),
    ],
)
def test_settings_out_of_range_are_value_errors_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=rf"PipelineConfig\.{message}"):
        PipelineConfig(**{field: value})


def test_good_settings_of_other_spellings_are_kept(tmp_path):
    config = PipelineConfig(
        encoder_model=tmp_path, curated_keys=["store"], force_promotion=["encoder"], seed=-1
    )
    assert config.curated_keys == ("store",) and config.force_promotion == ("encoder",)
    assert config.encoder_model == tmp_path and config.fingerprint()


def test_numpy_numbers_are_plain_settings():
    np = pytest.importorskip("numpy")
    config = PipelineConfig(
        seed=np.int64(3), max_test_questions=np.int32(5), p_no_gold=np.float32(0.25)
    )
    assert (config.seed, config.max_test_questions, config.p_no_gold) == (3, 5, 0.25)
    assert type(config.seed) is int and type(config.p_no_gold) is float
    assert (
        config.fingerprint()
        == PipelineConfig(seed=3, max_test_questions=5, p_no_gold=0.25).fingerprint()
    )
    with pytest.raises(TypeError, match="seed"):
        PipelineConfig(seed=np.float64(1.5))


def test_a_bad_device_fails_before_anything_is_written(tiny_corpus, tmp_path, capsys, no_index):
    out = tmp_path / "o"
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device"):
        TuningPipeline(tiny_corpus["docs"], out, config=PipelineConfig(device="gpu"))
    code = main(["tune", "--docs", str(tiny_corpus["docs"]), "--out", str(out), "--device", "gpu"])
    err = capsys.readouterr().err
    assert code == 2 and "device='gpu' is not a torch device" in err and "Traceback" not in err
    assert not out.exists()
