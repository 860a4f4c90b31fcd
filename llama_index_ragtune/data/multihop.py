"""Two-hop grounded questions made from SQuAD 2.0: the answer needs two sources, both cited.

HotpotQA-style evaluation asks a question over two gold paragraphs plus a
distractor, and asks it again with the gold removed. SQuAD 2.0 has no such
questions, but many of its paragraphs hold a *bridge*: the question names an
entity that only an earlier sentence names, and the sentence with the answer
refers back to it ("Warsaw's first stock exchange was established in 1817 ...
**It** was re-established in April 1991"). Splitting such a paragraph between
those sentences gives two sources that are each needed:

- ``bridge`` source: the sentences before the answer sentence (they name the
  entity the question asks about, but do not hold the answer);
- ``answer`` source: the answer sentence and the rest of the paragraph.

A question qualifies (:func:`find_bridge`) when its answer sentence is not the
first, no answer text occurs in the bridge half, and a question word missing
from the answer sentence occurs in the bridge half; that word must be a name
(capitalised in the question) or the answer sentence must open with a
referring word (``It``, ``He``, ``The``, ``This``...). Each qualifying question
becomes a :class:`MultiHopExample` whose two gold ids are the halves
(``<qid>#bridge``, ``<qid>#answer``), whose evidence is the answer sentence,
and whose ``evidence_by_doc`` gives each half the text that makes it needed.

:class:`MultiHopSet.contexts` lays each question out like the hidden
multi-hop test: the two halves plus ``top_k - 2`` distractors retrieved for
the question (never the split paragraph itself, never a paragraph holding an
answer text), shuffled; and its twin with the gold removed (``top_k``
distractors, the refusal as target). A grounded answer should cite both halves
(``GenerationEvaluator``'s ``citation_all``) or refuse the twin.

Example::

    from llama_index_ragtune.data import load_squad_v2
    from llama_index_ragtune.data.multihop import build_squad_multihop

    examples, documents = load_squad_v2(path, split="test")
    multihop = build_squad_multihop(examples, documents, seed=0)
    contexts = multihop.contexts(top_k=3, max_context_chars=600)   # answerable + gold-removed twins
    contexts[0].gold_numbers                                       # e.g. [1, 3]: both halves
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.qa import QAExample, split_sentences

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

    from llama_index_ragtune.data.grounded import GroundedContext

BRIDGE_SUFFIX, ANSWER_SUFFIX, NO_GOLD_SUFFIX = "#bridge", "#answer", "#no-gold"
MIN_DISTRACTORS = 3
"""A question is kept only when the retriever finds this many paragraphs without its answer."""
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "was",
        "were",
        "are",
        "be",
        "been",
        "being",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "did",
        "do",
        "does",
        "done",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "as",
        "than",
        "into",
        "during",
        "after",
        "before",
        "about",
        "name",
        "named",
        "called",
        "many",
        "much",
        "one",
        "two",
        "first",
    ]
)
_REFERRING = frozenset(
    [
        "it",
        "its",
        "he",
        "his",
        "she",
        "her",
        "they",
        "their",
        "them",
        "this",
        "these",
        "those",
        "that",
        "such",
        "the",
        "both",
    ]
)


@dataclass
class MultiHopExample(QAExample):
    """A ``QAExample`` whose gold documents are all needed to answer.

    ``evidence_by_doc`` maps each gold document id to the text it contributes
    (the bridge half's naming sentence, the answer sentence); a source counts
    as cited-worthy only when that text is still in it after truncation.
    ``origin`` is the id of the question it was made from.

    Example::

        MultiHopExample("q1", "When was it re-established?", ["q1#bridge", "q1#answer"],
                        ["April 1991"], evidence_by_doc={"q1#bridge": "Warsaw's exchange opened.",
                                                         "q1#answer": "It re-opened in April 1991."})
    """

    evidence_by_doc: dict[str, str] = field(default_factory=dict)
    origin: str = ""


@dataclass(frozen=True)
class Bridge:
    """Where a paragraph splits for one question: ``bridge`` (before) and ``answer`` (from the
    answer sentence on), the question words only the bridge half names, and its naming sentence.

    Example::

        find_bridge(question, paragraph).answer_sentence   # 'It was re-established in April 1991.'
    """

    bridge: str
    answer: str
    answer_sentence: str
    bridge_words: tuple[str, ...]
    bridge_sentence: str


def _words(text: str) -> set[str]:
    """Lower-case words, possessive ``'s`` dropped (``Warsaw's`` -> ``warsaw``)."""
    return {_plain(w) for w in _WORD.findall(text)}


def _plain(word: str) -> str:
    word = word.lower().strip("'-")
    return word[:-2] if word.endswith("'s") else word


def find_bridge(example: QAExample, paragraph: str) -> Bridge | None:
    """The two-source split of ``paragraph`` for ``example`` (module docstring: the rules), or None.

    Example::

        from llama_index_ragtune.data.qa import QAExample

        q = QAExample("q1", "When was Warsaw's stock exchange re-established?", ["p"], ["April 1991"])
        text = "Warsaw's first stock exchange opened in 1817. It was re-established in April 1991."
        find_bridge(q, text).bridge_words     # ('exchange', 'stock', 'warsaw')
    """
    if not example.answerable or not example.answers:
        return None
    sentences = split_sentences(paragraph)
    answers = [a.lower() for a in example.answers if a.strip()]
    k = next(
        (i for i, s in enumerate(sentences) if any(a in s.lower() for a in answers)),
        None,
    )
    if not k:  # None, or the answer is in the first sentence: no bridge before it
        return None
    before, answer_sentence = " ".join(sentences[:k]), sentences[k]
    if any(a in before.lower() for a in answers):
        return None
    question_words = {w for w in _words(example.question) if w not in _STOP}
    missing = sorted((question_words - _words(answer_sentence)) & _words(before))
    if not missing:
        return None
    # names: capitalised question words, the question's first word aside
    names = {_plain(w) for w in _WORD.findall(example.question)[1:] if w[0].isupper()}
    opener = answer_sentence.split()[0].lower().strip("\"'(") if answer_sentence.split() else ""
    if not (set(missing) & names) and opener not in _REFERRING:
        return None
    naming = max(sentences[:k], key=lambda s: (len(set(missing) & _words(s)), -sentences.index(s)))
    return Bridge(
        bridge=before,
        answer=" ".join(sentences[k:]),
        answer_sentence=answer_sentence,
        bridge_words=tuple(missing),
        bridge_sentence=naming,
    )


@dataclass
class MultiHopSet:
    """Two-hop questions, the texts of every source they may show, and their distractors.

    ``texts`` holds the split halves and every paragraph of the corpus;
    ``distractors`` maps each question id to paragraph ids retrieved for it,
    best first (never its own paragraph, never one holding an answer text).

    Example::

        multihop = build_squad_multihop(examples, documents, max_examples=50)
        contexts = multihop.contexts(top_k=3)       # 50 answerable + 50 gold-removed twins
    """

    examples: list[MultiHopExample]
    texts: dict[str, str]
    distractors: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.examples)

    def contexts(
        self,
        top_k: int = 3,
        max_context_chars: int | None = None,
        seed: int = 0,
        with_twins: bool = True,
        **builder_kwargs: Any,
    ) -> list[GroundedContext]:
        """Each question over its two halves + ``top_k - 2`` distractors, and (``with_twins``) its
        twin with the gold removed (``top_k`` distractors, the refusal as target).

        ``builder_kwargs`` go to ``GroundedSFTBuilder`` (``refusal``, ``system_prompt``,
        ``max_quote_chars``). A question whose halves lose their evidence to
        ``max_context_chars`` gets the refusal target, like any grounded context.
        """
        from llama_index_ragtune.data.grounded import GroundedSFTBuilder

        if top_k < 3:
            raise ValueError(
                f"MultiHopSet.contexts: top_k must be >= 3 (two gold sources and a distractor), "
                f"got {top_k}."
            )
        builder = GroundedSFTBuilder(
            None,  # type: ignore[arg-type]  # sources come from self.distractors, not a retriever
            self.texts,
            top_k=top_k,
            p_no_gold=0.0,
            max_context_chars=max_context_chars,
            seed=seed,
            **builder_kwargs,
        )
        out: list[GroundedContext] = []
        for example in self.examples:
            retrieved = self.distractors[example.qid]
            out.append(builder.context_for(example, retrieved, force_gold=True, drop_gold=False))
            if with_twins:
                twin = builder.context_for(example, retrieved, force_gold=True, drop_gold=True)
                twin.qid = example.qid + NO_GOLD_SUFFIX
                out.append(twin)
        return out


def _doc_texts(documents: Sequence[BaseNode] | Mapping[str, str]) -> dict[str, str]:
    from llama_index.core.schema import MetadataMode

    if isinstance(documents, Mapping):
        return {str(k): str(v) for k, v in documents.items()}
    return {
        (d.ref_doc_id or d.node_id): d.get_content(metadata_mode=MetadataMode.NONE)
        for d in documents
    }


def build_squad_multihop(
    examples: Sequence[QAExample],
    documents: Sequence[BaseNode] | Mapping[str, str],
    retriever: Any | None = None,
    max_examples: int | None = None,
    n_distractors: int = 6,
    seed: int = 0,
) -> MultiHopSet:
    """Two-hop questions from SQuAD-style ``examples`` over one-paragraph documents.

    Args:
        examples: questions with one gold paragraph each (e.g. ``load_squad_v2``);
            unanswerable ones and those without a bridge are skipped.
        documents: the paragraphs (``Document`` objects or ``{doc_id: text}``).
        retriever: finds the distractors (any LlamaIndex retriever over ``documents``);
            ``None`` builds BM25 over them.
        max_examples: keep at most this many questions (sampled with ``seed``).
        n_distractors: distractor ids kept per question (a context uses ``top_k - 2``
            of them, its twin ``top_k``); a question with fewer than ``MIN_DISTRACTORS``
            is skipped.
        seed: sampling seed.

    Raises:
        ValueError: no question has a bridge (wrong data, or too few examples).

    Example::

        multihop = build_squad_multihop(examples, documents, max_examples=60, seed=0)
        len(multihop), multihop.examples[0].gold_doc_ids    # (60, ['56de...#bridge', '56de...#answer'])
    """
    texts = _doc_texts(documents)
    if retriever is None:
        from llama_index.core.schema import TextNode

        from llama_index_ragtune.retrievers.bm25 import BM25Retriever

        nodes = [TextNode(id_=k, text=v) for k, v in texts.items()]
        retriever = BM25Retriever.from_defaults(
            nodes=nodes, similarity_top_k=min(len(nodes), 3 * n_distractors + 10)
        )
    chosen: list[tuple[QAExample, str, Bridge]] = []
    for example in examples:
        if len(example.gold_doc_ids) != 1 or example.gold_doc_ids[0] not in texts:
            continue
        bridge = find_bridge(example, texts[example.gold_doc_ids[0]])
        if bridge is not None:
            chosen.append((example, example.gold_doc_ids[0], bridge))
    if not chosen:
        raise ValueError(
            f"build_squad_multihop: none of the {len(examples)} questions has a bridge (an answer "
            "sentence after a sentence naming what the question asks about); pass SQuAD-style "
            "answerable questions with their paragraphs."
        )
    _refuse_id_clashes([example.qid for example, _, _ in chosen], texts)
    if max_examples is not None and len(chosen) > max_examples:
        chosen = random.Random(seed).sample(chosen, max_examples)
    out_texts = dict(texts)
    out_examples: list[MultiHopExample] = []
    distractors: dict[str, list[str]] = {}
    for example, paragraph_id, bridge in chosen:
        bridge_id, answer_id = example.qid + BRIDGE_SUFFIX, example.qid + ANSWER_SUFFIX
        answers = [a.lower() for a in example.answers if a.strip()]  # "" is in every text
        picked = []
        for hit in retriever.retrieve(example.question):
            doc = hit.node.ref_doc_id or hit.node.node_id
            if doc == paragraph_id or doc in picked or doc not in texts:
                continue
            if any(a in texts[doc].lower() for a in answers):
                continue
            picked.append(doc)
        if len(picked) < MIN_DISTRACTORS:
            continue  # the retriever found too few paragraphs without the answer
        out_texts[bridge_id], out_texts[answer_id] = bridge.bridge, bridge.answer
        distractors[example.qid] = picked[:n_distractors]
        out_examples.append(
            MultiHopExample(
                qid=example.qid,
                question=example.question,
                gold_doc_ids=[bridge_id, answer_id],
                answers=list(example.answers),
                answerable=True,
                evidence=[bridge.answer_sentence],
                evidence_by_doc={
                    bridge_id: bridge.bridge_sentence,
                    answer_id: bridge.answer_sentence,
                },
                origin=example.qid,
            )
        )
    return MultiHopSet(out_examples, out_texts, distractors)


def _refuse_id_clashes(qids: list[str], texts: Mapping[str, str]) -> None:
    """A ``ValueError`` when a question id is used twice, or a half's id (``<qid>#bridge``,
    ``<qid>#answer``) is already a document id (a set built from an earlier set's halves):
    the halves would replace a document's text, or another question's halves."""
    seen: set[str] = set()
    for qid in qids:
        if qid in seen:
            raise ValueError(
                f"build_squad_multihop: question id {qid!r} is used by two questions; their "
                "halves would share ids: give every question its own id."
            )
        seen.add(qid)
        taken = [i for i in (qid + BRIDGE_SUFFIX, qid + ANSWER_SUFFIX) if i in texts]
        if taken:
            raise ValueError(
                f"build_squad_multihop: question {qid!r} would split its paragraph into "
                f"{taken[0]!r}, which is already a document id (documents made by an earlier "
                "build_squad_multihop?); pass the original paragraphs, or rename the document."
            )
