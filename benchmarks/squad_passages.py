"""Build ``squad-passages``: a BEIR-layout retrieval set with many graded positives per query.

A second development benchmark for encoder-side tuning, unlike SciFact (one or
two positives per query, few queries per topic). Every SQuAD 2.0 paragraph is
cut into overlapping two-sentence passages (sentence ``i`` with sentence
``i + 1``, stride one sentence; a one-sentence paragraph is one passage).
Every answerable question becomes a query whose positives are graded:

- grade 2: each passage that holds a reference answer span in full (an answer
  that crosses a window boundary makes every passage it overlaps grade 2);
- grade 1: every other passage of the question's paragraph (on topic, but not
  where the answer is).

So a query has about four positives, queries about one paragraph share them,
and every article holds dozens of queries on one topic: in-batch "negatives"
are often relevant, mined near misses often are unlabelled positives, and most
positives are weak (grade 1). Unanswerable questions have no positive and are
left out. Splits go by article, as everywhere in this project: the last four
articles of the file are ``test``, the others ``train``.

The corpus title is the article title. Ids: passage ``<article>-<paragraph>-<i>``,
query = the SQuAD question id. The folder also gets ``PROVENANCE.json`` (source
file hash, the recipe, counts, licence: CC BY-SA 4.0 like SQuAD 2.0).

Example::

    python -m benchmarks.squad_passages \\
        --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --out benchmarks/data/squad-passages
    ragtune bench tuning --beir benchmarks/data/squad-passages --out benchmarks/results/tuning-squad
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
from collections import Counter
from pathlib import Path

from llama_index_ragtune.commands.options import bounded
from llama_index_ragtune.data.qa import SQUAD_TEST_ARTICLES, split_sentences

NAME = "squad-passages"
WINDOW = 2


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of ``split_sentences(text)`` inside ``text``."""
    spans: list[tuple[int, int]] = []
    position = 0
    for sentence in split_sentences(text):
        begin = text.find(sentence, position)
        if begin < 0:  # split_sentences only strips: every sentence is found in order
            raise ValueError(f"sentence not found in its paragraph: {sentence[:60]!r}")
        spans.append((begin, begin + len(sentence)))
        position = begin + len(sentence)
    return spans


def passage_spans(text: str, window: int = WINDOW) -> list[tuple[int, int]]:
    """Overlapping ``window``-sentence passages (stride one sentence) as character spans."""
    sentences = sentence_spans(text)
    if len(sentences) <= window:
        return [(sentences[0][0], sentences[-1][1])] if sentences else []
    return [
        (sentences[i][0], sentences[i + window - 1][1]) for i in range(len(sentences) - window + 1)
    ]


def grade_passages(spans: list[tuple[int, int]], answers: list[tuple[int, int]]) -> dict[int, int]:
    """``{passage index: grade}``: 2 where an answer span lies inside, else 1.

    An answer that lies inside no passage (it crosses a window boundary) makes
    every passage it overlaps grade 2.
    """
    grades = dict.fromkeys(range(len(spans)), 1)
    for start, end in answers:
        inside = [i for i, (a, b) in enumerate(spans) if a <= start and end <= b]
        overlapping = [i for i, (a, b) in enumerate(spans) if a < end and start < b]
        for i in inside or overlapping:
            grades[i] = 2
    return grades


def build(squad_path: Path, window: int = WINDOW) -> dict:
    """The data set as ``{"corpus", "queries", "qrels": {split: {qid: {doc: grade}}}, "stats"}``."""
    data = json.loads(squad_path.read_text(encoding="utf-8"))["data"]
    cut = len(data) - SQUAD_TEST_ARTICLES
    corpus: dict[str, dict] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for a, article in enumerate(data):
        split = "train" if a < cut else "test"
        title = article.get("title", "").replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            context = paragraph["context"]
            spans = passage_spans(context, window)
            ids = [f"{a}-{p}-{i}" for i in range(len(spans))]
            for doc_id, (start, end) in zip(ids, spans, strict=True):
                corpus[doc_id] = {"_id": doc_id, "title": title, "text": context[start:end]}
            for qa in paragraph["qas"]:
                answers = [
                    (int(x["answer_start"]), int(x["answer_start"]) + len(x["text"]))
                    for x in qa.get("answers") or []
                    if x["text"].strip()
                ]
                if qa.get("is_impossible") or not answers:
                    continue
                qid = str(qa["id"])
                queries[qid] = qa["question"].strip()
                grades = grade_passages(spans, answers)
                qrels[split][qid] = {ids[i]: g for i, g in grades.items()}
    return {"corpus": corpus, "queries": queries, "qrels": qrels, "stats": _stats(corpus, qrels)}


def _stats(corpus: dict, qrels: dict) -> dict:
    out: dict = {"corpus": len(corpus)}
    for split, judged in qrels.items():
        per_query = [len(docs) for docs in judged.values()]
        grades = Counter(g for docs in judged.values() for g in docs.values())
        out[split] = {
            "queries": len(judged),
            "pairs": sum(per_query),
            "positives_per_query_mean": round(statistics.fmean(per_query), 2),
            "positives_per_query_max": max(per_query),
            "grade_2": grades[2],
            "grade_1": grades[1],
        }
    return out


def write(dataset: dict, out: Path, source: Path, window: int = WINDOW) -> Path:
    """Write the BEIR layout into ``out`` atomically (a temporary sibling, then a rename)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "qrels").mkdir(parents=True)
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in dataset["corpus"].values():
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in dataset["queries"].items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    for split, judged in dataset["qrels"].items():
        with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in judged.items():
                for doc_id, grade in docs.items():
                    f.write(f"{qid}\t{doc_id}\t{grade}\n")
    provenance = {
        "name": NAME,
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "recipe": (
            f"benchmarks/squad_passages.py: {window}-sentence passages, stride 1 sentence; grade 2 = "
            "passage holding an answer span, grade 1 = other passages of the paragraph; answerable "
            f"questions only; split by article (last {SQUAD_TEST_ARTICLES} = test)"
        ),
        "licence": "CC BY-SA 4.0 (SQuAD 2.0)",
        "stats": dataset["stats"],
    }
    (tmp / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", required=True, type=Path, help="SQuAD 2.0 JSON file")
    parser.add_argument("--out", required=True, type=Path, help="output folder (BEIR layout)")
    parser.add_argument(
        "--window", type=bounded(int, 1), default=WINDOW, help="sentences per passage"
    )
    args = parser.parse_args(argv)
    if not args.squad.is_file():
        parser.error(f"--squad: no such file: {args.squad}")
    dataset = build(args.squad, args.window)
    out = write(dataset, args.out, args.squad, args.window)
    print(json.dumps(dataset["stats"], indent=2))
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
