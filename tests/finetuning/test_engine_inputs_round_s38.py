"""Degenerate user data in the fine-tune engines (round s38): a grounded QA file of one
question (no validation split), and a given validation set holding training questions."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

datasets = pytest.importorskip("datasets")

from llama_index_ragtune.data.errors import DataError  # noqa: E402
from llama_index_ragtune.data.grounded import GroundedSFTBuilder  # noqa: E402
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa  # noqa: E402
from llama_index_ragtune.data.schema import RetrievalDataset  # noqa: E402
from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine  # noqa: E402
from llama_index_ragtune.finetuning.validation_split import (  # noqa: E402
    leave_out_validation_questions,
    validation_questions_in_training,
)

ENGINES = "llama_index_ragtune.finetuning.base"


def _sft_rows(tmp_path, questions: list[str]):
    """SFT rows of a grounded QA file with one line per question."""
    lines = [
        {
            "id": f"q{i}",
            "question": question,
            "sources": [{"id": f"s{i}", "text": f"Store {i} opens at {i} am."}],
            "gold": [f"s{i}"],
            "answer": f"{i} am",
        }
        for i, question in enumerate(questions)
    ]
    path = tmp_path / f"qa{len(questions)}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    qa = load_grounded_qa(path)
    builder = GroundedSFTBuilder(None, qa.documents, top_k=1)
    gold = {e.qid: list(e.gold_doc_ids) for e in qa.train}
    return builder.to_dataset(builder.build_contexts(qa.train, retrieved=gold, show_progress=False))


def _engine(rows, tmp_path, **options) -> DecoderFinetuneEngine:
    return DecoderFinetuneEngine(
        rows,
        model="org/not-loaded",  # a hub id: nothing is loaded to split
        output_dir=tmp_path / "run",
        show_progress=False,
        **options,
    )


def test_a_decoder_with_one_question_says_why_it_has_no_validation(tmp_path, caplog) -> None:
    """Was silent: the run ended "no validation loss for both models (the starting model has
    no validation metrics ...)" without saying that one question leaves none to hold out,
    as the encoder and reranker engines do."""
    rows = _sft_rows(tmp_path, ["When does store 0 open?"])
    with caplog.at_level(logging.WARNING, logger=ENGINES):
        train, val = _engine(rows, tmp_path).split_validation()
    assert val is None and len(train) == 1
    assert (
        "DecoderFinetuneEngine: no validation split: there is one training question, so none "
        "can be held out" in caplog.text
    )
    twins = _sft_rows(tmp_path, ["When does it open?", "when does it OPEN", "When does it open"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=ENGINES):
        assert _engine(twins, tmp_path).split_validation()[1] is None
    assert "all 3 training questions are the same question" in caplog.text


def test_two_and_three_questions_hold_one_out_and_no_fraction_is_silent(tmp_path, caplog):
    for n in (2, 3):
        rows = _sft_rows(tmp_path, [f"When does store {i} open?" for i in range(n)])
        train, val = _engine(rows, tmp_path).split_validation()
        assert len(val) == 1 and len(train) == n - 1
        assert not set(val["qid"]) & set(train["qid"])
    rows = _sft_rows(tmp_path, ["When does store 0 open?"])
    with caplog.at_level(logging.WARNING, logger=ENGINES):
        assert _engine(rows, tmp_path, val_fraction=0).split_validation()[1] is None
    assert "no validation split" not in caplog.text  # asked for none: nothing to warn


def test_a_given_decoder_validation_set_of_training_questions_is_named(tmp_path, caplog):
    """Was silent: promotion was decided on questions the model had trained on."""
    rows = _sft_rows(tmp_path, [f"When does store {i} open?" for i in range(4)])
    val = _sft_rows(tmp_path, ["when does STORE 1 open", "Where is store 9?"])
    with caplog.at_level(logging.WARNING, logger=ENGINES):
        train, kept_val = _engine(rows, tmp_path, val_dataset=val).split_validation()
    assert len(train) == 4 and kept_val is val  # the library keeps what it was given
    assert "DecoderFinetuneEngine: 1 of the 4 training questions are also validation" in (
        caplog.text
    )


def _dataset(questions: dict[str, str]) -> RetrievalDataset:
    corpus = {f"d{i}": f"passage {i} about topic{i}" for i in range(len(questions))}
    relevant = {q: [f"d{i}"] for i, q in enumerate(questions)}
    return RetrievalDataset(questions, corpus, relevant)


def test_the_cli_leaves_validation_questions_out_of_training(caplog) -> None:
    train = _dataset({f"q{i}": f"What about topic{i}?" for i in range(6)})
    val = _dataset({"v0": "what about TOPIC1", "v1": "what about topic4 ", "v2": "Other?"})
    assert validation_questions_in_training(list(train.queries.values()), ["WHAT about topic1"])
    with caplog.at_level(logging.WARNING, logger=ENGINES):
        kept = leave_out_validation_questions(train, val)
    assert kept.query_ids == ["q0", "q2", "q3", "q5"]
    assert "2 of the 6 training questions are also --val-dataset questions" in caplog.text
    assert leave_out_validation_questions(train, None) is train
    with pytest.raises(DataError, match="every one of the 6 training questions is also a"):
        leave_out_validation_questions(train, train)


# ---------------------------------------------------------------- an unwritable embedding cache

CACHE_CHILD = """
import json, sys
import numpy as np
from llama_index_ragtune.embeddings.store import open_store

calls = []
def embed(texts):
    calls.append(len(texts))
    return np.ones((len(texts), 4), dtype=np.float32)

report = {}
for name in sys.argv[1:]:
    store = open_store(name, "model|1")
    vectors, counts = store.fetch_or_embed(["a", "b"], embed)
    report[name] = {"counts": counts, "shape": list(vectors.shape)}
print(json.dumps(report))
"""


def _read_only_child(folder, args: list[str]) -> subprocess.CompletedProcess:
    """Run ``CACHE_CHILD`` with ``folder`` read-only: a real read-only bind mount in an
    unprivileged namespace, or (not root) the folder's write permission removed."""
    script = folder.parent / "child.py"
    script.write_text(CACHE_CHILD, encoding="utf-8")
    command = [sys.executable, str(script), *args]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return subprocess.run(command, capture_output=True, text=True, check=False)
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs unshare and mount (as root, a read-only folder is still writable)")
    mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && '
    run = ["unshare", "-r", "-m", "sh", "-c", mount + " ".join(f'"{c}"' for c in command)]
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    if "mount" in done.stderr and done.returncode != 0 and "Traceback" not in done.stderr:
        pytest.skip(f"read-only bind mounts are not allowed here: {done.stderr.strip()}")
    return done


def test_an_embedding_cache_on_a_read_only_folder_is_read_and_not_an_error(tmp_path):
    """Were a raw ``sqlite3.OperationalError: unable to open database file`` (an existing or
    empty read-only folder) and a raw ``OSError`` (a cache folder to create there):
    ``--embedding-cache`` on a read-only mount stopped the run. The cache only saves time:
    its vectors are used as they are, the rest computed, one warning names the folder."""
    import numpy as np

    from llama_index_ragtune.embeddings.store import open_store

    folder = tmp_path / "ro"
    (folder / "filled").mkdir(parents=True)
    (folder / "empty").mkdir()
    store = open_store(folder / "filled", "model|1")
    store.fetch_or_embed(["a"], lambda texts: np.zeros((len(texts), 4), dtype=np.float32))
    store.close()
    names = [str(folder / n) for n in ("filled", "empty", "new")]
    done = _read_only_child(folder, names)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report[names[0]]["counts"] == {"hits": 1, "misses": 1, "corrupt": 0}
    assert report[names[1]]["counts"] == {"hits": 0, "misses": 2, "corrupt": 0}
    assert report[names[2]]["counts"] == {"hits": 0, "misses": 2, "corrupt": 0}
    assert all(r["shape"] == [2, 4] for r in report.values())
    assert f"embedding cache {names[0]} cannot be written" in done.stderr
    assert "the vectors stored in it are used" in done.stderr
    assert f"embedding cache {names[2]} cannot be written" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (folder / "empty").iterdir()) == []  # nothing written
