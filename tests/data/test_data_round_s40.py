"""Round s40 of hostile inputs to the data loaders and training-data builders.

Special files where a loader expects a file or folder (named, never opened or waited on),
an LLM answering with terminal codes and control characters, arguments that hung or
asked nothing, ids in two Unicode forms, seeds that are no whole number, grounded examples
without an answer text, preference answers that do not match their prompts, and multi-hop
halves whose ids are taken.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.schema import TextNode

from llama_index_ragtune.data import DataError, GroundedSFTBuilder, QAExample, RetrievalDataset
from llama_index_ragtune.data.beir import check_beir_folder, load_beir
from llama_index_ragtune.data.multihop import build_squad_multihop
from llama_index_ragtune.data.preference import PreferenceBuilder
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.reading import read_json_file
from llama_index_ragtune.data.splitting import held_out_twins, split_query_ids
from llama_index_ragtune.data.squad import load_squad_v2
from llama_index_ragtune.data.synthetic import generate_synthetic_queries
from llama_index_ragtune.data.synthetic_parsing import parse_questions
from tests.stub_llm import UserLLM

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
needs_dev_null = pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")


def _beir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "Statins lower LDL."}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "what lowers LDL?"}\n')
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    return root


def _finishes(call: Callable[[], Any], unblock: Callable[[], None] = lambda: None) -> Any:
    """``call()``'s result or exception, run in a thread so that a reader blocked forever (the
    old code) fails the test instead of hanging the run; ``unblock`` frees it afterwards."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        unblock()
        thread.join(5)
        pytest.fail("the call blocked instead of refusing its input")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _unblock_fifo(path: Path) -> Callable[[], None]:
    def unblock() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # EOF for a blocked reader

    return unblock


# --------------------------------------------------------------- special files as paths


@needs_fifo
def test_a_named_pipe_as_corpus_jsonl_is_named_and_never_waited_on(tmp_path) -> None:
    root = _beir(tmp_path / "beir")
    (root / "corpus.jsonl").unlink()
    os.mkfifo(root / "corpus.jsonl")
    with pytest.raises(DataError, match=r"corpus\.jsonl: is a named pipe \(FIFO\), not a plain"):
        _finishes(lambda: load_beir(root), _unblock_fifo(root / "corpus.jsonl"))
    with pytest.raises(DataError, match="named pipe"):
        check_beir_folder(root)
    (root / "corpus.jsonl").unlink()  # a gzip corpus is still read through the same opener
    (root / "corpus.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "d1", "text": "Statins."}\n'))
    assert load_beir(root).corpus == {"d1": "Statins."}


def test_a_broken_link_as_queries_jsonl_is_named_as_one(tmp_path) -> None:
    root = _beir(tmp_path / "beir")
    (root / "queries.jsonl").unlink()
    (root / "queries.jsonl").symlink_to(tmp_path / "moved-away.jsonl")
    with pytest.raises(FileNotFoundError, match=r"broken symbolic link to .*moved-away\.jsonl"):
        load_beir(root)


@needs_dev_null
def test_a_device_as_the_qrels_of_a_split_is_named(tmp_path) -> None:
    root = _beir(tmp_path / "beir")
    (root / "qrels" / "dev.tsv").symlink_to("/dev/null")
    with pytest.raises(DataError, match=r"dev\.tsv: is a character device"):
        load_beir(root, split="dev")  # was "unknown split 'dev'; available splits: test"


@needs_fifo
def test_a_named_pipe_or_broken_link_as_the_beir_folder_is_named(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotADirectoryError, match=r"pipe is a named pipe \(FIFO\), not a BEIR"):
        load_beir(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r"link is a broken symbolic link to .*gone"):
        check_beir_folder(tmp_path / "link")


@needs_fifo
def test_a_named_pipe_as_a_qa_file_does_not_hang_the_loader(tmp_path) -> None:
    pipe = tmp_path / "qa.jsonl"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=r"qa\.jsonl: is a named pipe \(FIFO\)"):
        _finishes(lambda: load_grounded_qa(pipe), _unblock_fifo(pipe))


@needs_dev_null
@pytest.mark.parametrize(
    "load",
    [load_squad_v2, RetrievalDataset.load_json, read_json_file],
    ids=["squad", "dataset", "read_json_file"],
)
def test_a_device_as_a_json_file_is_named(tmp_path, load) -> None:
    (tmp_path / "data.json").symlink_to("/dev/null")
    with pytest.raises(DataError, match=r"data\.json: is a character device, not a plain file"):
        load(tmp_path / "data.json")


# --------------------------------------------------------------- synthetic queries


APPLES = (
    "Fresh apples and other produce bought in our grocery department can be returned "
    "within seven days when you bring the receipt to the customer service desk"
)


def test_terminal_codes_and_control_characters_are_not_part_of_questions() -> None:
    answer = (
        "\x1b[1;32mHow long can I return fresh apples?\x1b[0m\n"
        "Do I need a\x00 receipt to\x07return produce?\n"
        "\x1b]0;window title\x07Where is the service desk?"
    )
    assert parse_questions(answer) == [
        "How long can I return fresh apples?",
        "Do I need a receipt to return produce?",
        "Where is the service desk?",
    ]


def test_an_answer_of_only_control_characters_is_an_empty_answer() -> None:
    llm = UserLLM(reply=lambda prompt: "\x00\x01\x02\n\x07\x1b[31m\n\x7f")
    result = generate_synthetic_queries(
        [TextNode(id_="n1", text=APPLES)], llm=llm, show_progress=False
    )
    assert result.stats["generated"] == 0 and result.dropped == []
    assert result.node_stats["empty_answers"] == 1


def test_a_question_with_terminal_codes_is_kept_clean() -> None:
    llm = UserLLM(reply=lambda prompt: "\x1b[1mHow long can I return fresh apples?\x1b[0m")
    result = generate_synthetic_queries(
        [TextNode(id_="n1", text=APPLES)], llm=llm, show_progress=False
    )
    assert result.pairs == [("How long can I return fresh apples?", "n1")]


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("retries", -1, "retries must be a whole number >= 0"),
        ("retries", "2", "retries must be a whole number >= 0"),
        ("num_workers", 0, "num_workers must be a whole number >= 1"),
        ("min_query_tokens", -1, "min_query_tokens must be a whole number >= 0"),
        ("on_failure", "explode", "on_failure must be 'skip' or 'raise'"),
    ],
)
def test_options_that_asked_nothing_or_waited_forever_are_refused(option, value, needle) -> None:
    calls: list[str] = []
    llm = UserLLM(reply=lambda prompt: calls.append(prompt) or "How long can I return apples?")
    with pytest.raises(ValueError, match=needle):
        _finishes(
            lambda: generate_synthetic_queries(
                [TextNode(id_="n1", text=APPLES)],
                llm=llm,
                use_async=option == "num_workers",
                show_progress=False,
                **{option: value},
            )
        )
    assert calls == []


def test_nodes_given_as_text_are_a_type_error() -> None:
    llm = UserLLM(reply=lambda prompt: "How long can I return apples?")
    with pytest.raises(TypeError, match="nodes must be a list of LlamaIndex nodes, got str"):
        generate_synthetic_queries(APPLES, llm=llm, show_progress=False)
    with pytest.raises(TypeError, match=r"nodes\[1\] is a str, not a LlamaIndex node"):
        generate_synthetic_queries(
            [TextNode(id_="n1", text=APPLES), APPLES], llm=llm, show_progress=False
        )


# --------------------------------------------------------------- RetrievalDataset ids


@pytest.mark.parametrize("field", ["queries", "corpus"])
def test_ids_in_two_unicode_forms_are_one_id(tmp_path, field) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    if field == "queries":
        kwargs = {
            "queries": {nfc: "what is a cafe", nfd: "where is the cafe"},
            "corpus": {"d1": "A cafe sells coffee."},
            "relevant_docs": {nfc: ["d1"], nfd: ["d1"]},
        }
    else:
        kwargs = {
            "queries": {"q1": "what is a cafe"},
            "corpus": {nfc: "A cafe sells coffee.", nfd: "Another text."},
            "relevant_docs": {"q1": [nfc]},
        }
    with pytest.raises(DataError, match=rf"{field}: .*two Unicode forms .*'caf\\xe9' ~"):
        RetrievalDataset(**kwargs)


def test_a_saved_file_with_ids_in_two_forms_names_them_when_loaded(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps(
            {
                "queries": {"q1": "what is a cafe"},
                "corpus": {"caf\u00e9": "A cafe.", "cafe\u0301": "B."},
                "relevant_docs": {"q1": ["caf\u00e9"]},
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match="two Unicode forms"):
        RetrievalDataset.load_json(path)
    huge = 10**30  # numbers as ids still round-trip, as text
    ds = RetrievalDataset(
        queries={1: "what is a cafe"}, corpus={huge: "A cafe."}, relevant_docs={1: [huge]}
    )
    ds.save_json(path)
    assert RetrievalDataset.load_json(path).relevant_docs == {"1": [str(huge)]}


# --------------------------------------------------------------- splitting


QUERIES = {f"q{i}": f"question number {i} about topic {i}" for i in range(10)}
POSITIVES = {qid: [f"d{qid[1:]}"] for qid in QUERIES}


@pytest.mark.parametrize("seed", [None, "1", 1.0, 1.5, True])
def test_a_seed_that_is_no_whole_number_is_refused(seed) -> None:
    with pytest.raises(TypeError, match="seed must be a whole number"):
        split_query_ids(QUERIES, POSITIVES, 0.3, seed=seed)
    with pytest.raises(TypeError, match="seed must be a whole number"):
        held_out_twins(QUERIES, 3, seed)


def test_a_whole_number_seed_splits_as_before() -> None:
    import numpy as np

    first = split_query_ids(QUERIES, POSITIVES, 0.3, seed=1)
    assert split_query_ids(QUERIES, POSITIVES, 0.3, seed=np.int64(1)) == first
    assert len(first[1]) == 3 and set(first[0]) | set(first[1]) == set(QUERIES)


def test_a_fraction_given_as_text_is_named() -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\), got '0.3'"):
        split_query_ids(QUERIES, POSITIVES, "0.3")


def test_holding_out_more_groups_than_there_are_is_named() -> None:
    twins = {"a": "What is X?", "b": "what is x", "c": "Why Y?"}
    with pytest.raises(ValueError, match="hold out 3 question groups: the 3 questions make only 2"):
        held_out_twins(twins, 3, 0)


# --------------------------------------------------------------- grounded SFT


DOCS = {
    "d1": "Paris is the capital of France.",
    "d2": "Berlin is the capital of Germany.",
    "d3": "Rome is in Italy.",
}


def _context(example: QAExample, **kwargs: Any) -> Any:
    builder = GroundedSFTBuilder(None, DOCS, p_no_gold=0.0, **kwargs)  # type: ignore[arg-type]
    return builder.context_for(example, retrieved=["d2", "d3"])


@pytest.mark.parametrize("answers", [[""], ["   "], ["\u200b"]])
def test_an_answerable_example_without_answer_text_is_named(answers) -> None:
    example = QAExample("q1", "Capital of France?", ["d1"], answers=answers)
    with pytest.raises(ValueError, match="'q1' is answerable but has no answer text"):
        _context(example)  # was the target ' [1]': an empty answer, cited


def test_a_blank_first_answer_gives_way_to_the_next() -> None:
    example = QAExample("q1", "Capital of France?", ["d1"], answers=[" ", "Paris"])
    context = _context(example)
    assert context.answerable and context.target.startswith("Paris [")


def test_answers_given_as_one_string_are_one_answer() -> None:
    example = QAExample("q1", "Capital of France?", "d1", answers="Paris")
    assert example.answers == ["Paris"] and example.gold_doc_ids == ["d1"]
    assert _context(example).target.startswith("Paris [")  # was 'P [1]'


def test_numbers_as_qa_ids_are_text_and_other_types_are_named() -> None:
    example = QAExample(7, "Capital?", [1], answers=["Paris"])
    assert example.qid == "7" and example.gold_doc_ids == ["1"]
    with pytest.raises(TypeError, match=r"QAExample 'q1': gold_doc_ids .* got float 1.0"):
        QAExample("q1", "Capital?", [1.0])
    with pytest.raises(TypeError, match=r"QAExample 'q1': answers must be strings, got int"):
        QAExample("q1", "Capital?", ["d1"], answers=[42])


def test_an_empty_question_is_refused() -> None:
    with pytest.raises(ValueError, match="question 'q1' is empty"):
        _context(QAExample("q1", " \u200b ", ["d1"], answers=["Paris"]))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_context_chars": 0}, "max_context_chars must be None"),
        ({"max_context_chars": -3}, "max_context_chars must be None"),
        ({"top_k": 2.5}, "top_k must be a whole number >= 1"),
        ({"top_k": True}, "top_k must be a whole number >= 1"),
    ],
)
def test_builder_sizes_that_are_no_whole_number_in_range_are_refused(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        GroundedSFTBuilder(None, DOCS, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------- preference pairs


class ShortBatchLLM:
    """A batch LLM that drops the last answer of every batch (a broken server)."""

    def __init__(self) -> None:
        self.calls = 0

    def generate_batch(self, conversations: list, **kwargs: Any) -> list[ChatResponse]:
        self.calls += 1
        answers = [f"Paris [{1 + i % 2}]" for i in range(len(conversations))]
        return [ChatResponse(message=ChatMessage(role="assistant", content=a)) for a in answers][
            :-1
        ]


def test_fewer_sampled_answers_than_prompts_are_refused() -> None:
    contexts = [
        _context(QAExample(f"q{i}", "Capital of France?", ["d1"], answers=["Paris"]))
        for i in range(2)
    ]
    llm = ShortBatchLLM()
    with pytest.raises(ValueError, match="gave 3 answers for 4 prompts"):
        PreferenceBuilder().from_model_failures(llm, contexts, num_samples=2, show_progress=False)
    assert llm.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_samples": 2.5}, "num_samples must be a whole number >= 2"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
    ],
)
def test_sampling_options_out_of_range_are_refused(kwargs, needle) -> None:
    context = _context(QAExample("q1", "Capital of France?", ["d1"], answers=["Paris"]))
    llm = ShortBatchLLM()
    with pytest.raises(ValueError, match=needle):
        PreferenceBuilder().from_model_failures(llm, [context], show_progress=False, **kwargs)
    assert llm.calls == 0


def test_one_strategy_given_as_a_string_is_that_strategy() -> None:
    context = _context(QAExample("q1", "Capital of France?", ["d1"], answers=["Paris"]))
    pairs = PreferenceBuilder(strategies="uncited").build([context], show_progress=False)
    assert pairs["strategy"] == ["uncited"]
    assert pairs["chosen"][0] != pairs["rejected"][0]
    with pytest.raises(ValueError, match="pairs_per_context must be a whole number >= 1"):
        PreferenceBuilder(pairs_per_context=1.5)


# --------------------------------------------------------------- multi-hop


PARAGRAPH = (
    "Warsaw's first stock exchange was established in 1817 and continued trading until World "
    "War II. It was re-established in April 1991, following the end of the post-war communist "
    "control."
)
BRIDGE_Q = QAExample(
    "q1", "When was Warsaw's stock exchange re-established?", ["p"], ["April 1991"]
)


def _multihop_docs() -> dict[str, str]:
    docs = {"p": PARAGRAPH}
    for i in range(6):
        docs[f"x{i}"] = f"Warsaw stock exchange trading history fact number {i} about markets"
    return docs


def test_a_half_id_that_is_already_a_document_is_refused() -> None:
    docs = {**_multihop_docs(), "q1#bridge": "A real document about something else."}
    with pytest.raises(ValueError, match="'q1#bridge', which is already a document id"):
        build_squad_multihop([BRIDGE_Q], docs)  # its text was replaced by the bridge half


def test_one_question_id_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="question id 'q1' is used by two questions"):
        build_squad_multihop([BRIDGE_Q, BRIDGE_Q], _multihop_docs())
    assert len(build_squad_multihop([BRIDGE_Q], _multihop_docs())) == 1
