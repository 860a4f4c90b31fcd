"""``GroundedSFTBuilder``: cite-or-refuse chat examples over contexts retrieved by your own retriever.

Each ``QAExample`` becomes one conversation in TRL's prompt-completion format:
``prompt`` = the system + user messages that ``CitationQueryEngine`` sends at
answer time (``grounding.build_messages``), ``completion`` = the
assistant target. The context is the gold passage(s) plus distractors
*retrieved* for the question by the retriever you pass (hard negatives, not
random ones), shuffled with a seed. With probability ``p_no_gold`` the gold
passages are replaced by further retrieved non-gold passages and the target
becomes the refusal sentence; unanswerable examples always get the refusal.

Target format, one line: ``<answer> [n]: "<evidence quote>"``, or the refusal.

- extractive QA: the first reference answer span, cited with the number(s)
  of the gold source(s), then the sentence holding it, e.g.
  ``Rouen [2]: "The capital of Normandy is Rouen."``; an answer whose evidence
  spans several sources cites every one of them (``Vistula [1][3]: "..."``):
  a SciFact claim cites each gold abstract whose rationale is shown, a
  multi-hop question (``data.multihop``, every gold document needed) cites
  all its gold sources, or gets the refusal when one of them is missing;
- claims (``QAExample.label``): ``Supported [n]: "<rationale sentence>"`` or
  ``Contradicted [n]: "<rationale sentence>"``;
- no answer in the sources: the refusal sentence, exactly.

The quote is clipped to ``max_quote_chars`` (0 leaves it out: ``Rouen [2]``).
``GenerationEvaluator`` reads the answer (or the label from the first word)
before the ``: "..."`` tail and the citations anywhere. The quote makes the
model locate the evidence, and it keeps answer targets longer than the
refusal, so the refusal's tokens do not dominate the SFT loss.

Sources are whole documents (looked up by the retrieved node's
``ref_doc_id``; index one node per document, as ``CitationQueryEngine`` shows
node texts), cut to ``max_context_chars`` by ``grounding.truncate_source`` -- the
rule ``CitationQueryEngine(max_source_chars=...)`` applies at answer time, so
no window is centred on the answer. If that cut removes the evidence from
every gold passage, the target is the refusal: the answer is no longer in the
sources.

Example::

    from llama_index_ragtune.data import GroundedSFTBuilder, load_squad_v2
    from llama_index_ragtune.retrievers import BM25Retriever

    examples, documents = load_squad_v2(path, split="train")
    retriever = BM25Retriever.from_defaults(nodes=documents, similarity_top_k=10)
    builder = GroundedSFTBuilder(retriever, documents, top_k=3, p_no_gold=0.2, seed=0)
    dataset = builder.build(examples[:200])     # columns: prompt, completion, qid, ...
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.qa import QAExample
from llama_index_ragtune.data.records import match_text
from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    build_messages,
    check_refusal,
    cite,
    truncate_source,
)

if TYPE_CHECKING:
    import datasets
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import BaseNode

LABEL_WORDS = {"SUPPORT": "Supported", "CONTRADICT": "Contradicted"}
"""How a claim label is written in a target (``GenerationEvaluator`` reads the same words)."""


def format_target(
    example: QAExample, gold_numbers: Sequence[int], max_quote_chars: int = 150
) -> str:
    """The assistant answer for ``example`` when its gold sources sit at ``gold_numbers`` (1-based)."""
    if not gold_numbers:
        raise ValueError(f"format_target: example {example.qid} has no gold source in the context.")
    if example.label is not None:
        answer = LABEL_WORDS.get(example.label.upper())
        if answer is None:
            raise ValueError(
                f"example {example.qid}: unknown label {example.label!r} (expected {list(LABEL_WORDS)})."
            )
    elif _answers(example):
        answer = _answers(example)[0].strip()
    else:
        raise ValueError(
            f"example {example.qid} is answerable but has no answer text (answers: "
            f"{example.answers!r}); give the answer, or mark it answerable=False."
        )
    if max_quote_chars <= 0 or not example.evidence:
        return f"{answer} {cite(gold_numbers)}"
    return f'{answer} {cite(gold_numbers)}: "{_clip(example.evidence[0], max_quote_chars)}"'


def _answers(example: QAExample) -> list[str]:
    """The reference answers with some visible text (a blank one is in every source)."""
    return [a for a in example.answers if match_text(a)]


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


@dataclass
class GroundedContext:
    """One question with its numbered sources and the target the model should produce.

    ``source_ids[i]`` is the document id of source ``i + 1``; ``gold_numbers``
    are the 1-based numbers of the gold sources present; ``answerable`` is True
    when the target answers (the sources hold the answer) and False when the
    target is the refusal.
    """

    qid: str
    question: str
    source_ids: list[str]
    source_texts: list[str]
    gold_numbers: list[int]
    answerable: bool
    target: str
    example: QAExample = field(repr=False)
    gold_removed: bool = False

    def messages(
        self, refusal: str = DEFAULT_REFUSAL, system_prompt: str = DEFAULT_SYSTEM_PROMPT
    ) -> list[dict[str, str]]:
        """The prompt as ``{"role", "content"}`` dicts, exactly as ``build_messages`` writes it."""
        return [
            {"role": m.role.value, "content": m.content or ""}
            for m in build_messages(
                self.question, self.source_texts, refusal=refusal, system_prompt=system_prompt
            )
        ]

    @property
    def cited_gold_ids(self) -> list[str]:
        """Ids of the gold sources the target cites (empty for a refusal target)."""
        return [self.source_ids[n - 1] for n in self.gold_numbers] if self.answerable else []

    def evaluation_kwargs(self, answer: str) -> dict[str, Any]:
        """Keyword arguments of ``GenerationEvaluator.evaluate_example`` for ``answer`` in this context.

        The gold ids are the gold sources shown to the model (what a perfect
        answer cites); the expected behaviour follows the context: a context
        without the answer expects the refusal (claims: NOT ENOUGH INFO).
        """
        return {
            "question": self.question,
            "answer_text": answer,
            "source_node_ids": list(self.source_ids),
            "gold_node_ids": self.cited_gold_ids,
            "gold_answers": list(self.example.answers),
            "answerable": self.answerable,
            "gold_label": self.example.label if self.answerable else None,
            "source_texts": list(self.source_texts),
            "example_id": self.qid,
        }


def _doc_id(node: BaseNode) -> str:
    return node.ref_doc_id or node.node_id


class GroundedSFTBuilder:
    """Build grounded cite-or-refuse SFT data from QA examples and a retriever.

    Args:
        retriever: any LlamaIndex ``BaseRetriever`` over the same documents
            (``HybridRetriever``, ``BM25Retriever``...); it supplies the distractors.
        documents: the documents (``Document``/nodes, or ``{doc_id: text}``); gold
            passages and sources are looked up here by document id.
        top_k: sources per prompt.
        p_no_gold: probability that an answerable example loses its gold
            passages and gets the refusal target.
        max_context_chars: cut each source to this many characters (None = whole).
        refusal / system_prompt: the shared prompt's refusal sentence and system message.
        seed: makes shuffling and gold removal reproducible (per question id).
        max_quote_chars: longest evidence quote in a target (0: no quote).
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        documents: Sequence[BaseNode] | Mapping[str, str],
        top_k: int = 3,
        p_no_gold: float = 0.2,
        max_context_chars: int | None = None,
        refusal: str = DEFAULT_REFUSAL,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        seed: int = 0,
        max_quote_chars: int = 150,
    ) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(
                f"GroundedSFTBuilder: top_k must be a whole number >= 1, got {top_k!r}."
            )
        if max_context_chars is not None and (
            isinstance(max_context_chars, bool)
            or not isinstance(max_context_chars, int)
            or max_context_chars < 1
        ):
            raise ValueError(
                "GroundedSFTBuilder: max_context_chars must be None (whole sources) or a whole "
                f"number >= 1, got {max_context_chars!r} (0 showed ' ...' for every source, a "
                "negative number cut that many characters off the end)."
            )
        if not 0.0 <= p_no_gold <= 1.0:
            raise ValueError(f"GroundedSFTBuilder: p_no_gold must be in [0, 1], got {p_no_gold}.")
        self.retriever = retriever
        self.texts = self._texts(documents)
        self.top_k = top_k
        self.p_no_gold = p_no_gold
        self.max_context_chars = max_context_chars
        self.refusal = check_refusal(refusal)
        self.system_prompt = system_prompt
        self.seed = seed
        self.max_quote_chars = max_quote_chars

    @staticmethod
    def _texts(documents: Sequence[BaseNode] | Mapping[str, str]) -> dict[str, str]:
        from llama_index.core.schema import MetadataMode

        if isinstance(documents, Mapping):
            return {str(k): str(v) for k, v in documents.items()}
        texts: dict[str, str] = {}
        for node in documents:
            doc_id = _doc_id(node)
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            # Chunked documents: join their chunks back in order.
            texts[doc_id] = f"{texts[doc_id]}\n{text}" if doc_id in texts else text
        if not texts:
            raise ValueError(
                "GroundedSFTBuilder: `documents` is empty; pass the documents the retriever indexes."
            )
        return texts

    # ---------------------------------------------------------------- retrieval
    def retrieve_ids(self, question: str) -> list[str]:
        """Document ids the retriever returns for ``question``, best first, without repeats."""
        seen: dict[str, None] = {}
        for hit in self.retriever.retrieve(question):
            seen.setdefault(_doc_id(hit.node), None)
        return list(seen)

    def _source(self, doc_id: str, qid: str) -> str:
        if doc_id not in self.texts:
            raise KeyError(
                f"Document '{doc_id}' (retrieved or gold for question {qid}) is not in `documents`; "
                "pass the same documents the retriever indexes."
            )
        return truncate_source(self.texts[doc_id], self.max_context_chars)

    def context_for(
        self,
        example: QAExample,
        retrieved: Sequence[str] | None = None,
        force_gold: bool = True,
        drop_gold: bool | None = None,
    ) -> GroundedContext:
        """The numbered sources and target for one example.

        Args:
            retrieved: document ids already retrieved for it (retrieves when None).
            force_gold: put the gold passages in even when the retriever missed
                them (training); False keeps the retriever's top-k as it is (test).
            drop_gold: remove the gold passages; None draws it with ``p_no_gold``
                when ``force_gold`` (never otherwise).
        """
        if is_blank(example.question):
            raise ValueError(
                f"question {example.qid!r} is empty (or only invisible characters): there is "
                "nothing to answer; write the question or leave the example out."
            )
        if example.answerable and example.label is None and not _answers(example):
            raise ValueError(
                f"question {example.qid!r} is answerable but has no answer text (answers: "
                f"{example.answers!r}); give the answer, or mark it answerable=False."
            )
        rng = random.Random(f"{self.seed}:{example.qid}")
        if retrieved is None:
            retrieved = self.retrieve_ids(example.question)
        gold = list(dict.fromkeys(example.gold_doc_ids))
        distractors = [d for d in retrieved if d not in gold]
        if drop_gold is None:
            drop_gold = force_gold and rng.random() < self.p_no_gold
            # a question shown only its gold sources (a QA line with one source) has nothing
            # left to show without them: it keeps them (was "No sources for question ...")
            drop_gold = drop_gold and bool(distractors)
        if drop_gold:
            chosen = distractors[: self.top_k]
        elif force_gold:
            keep_gold = gold[: self.top_k]
            chosen = keep_gold + distractors[: self.top_k - len(keep_gold)]
            rng.shuffle(chosen)
        else:
            chosen = list(retrieved[: self.top_k])
        if not chosen:
            raise ValueError(
                f"No sources for question {example.qid}: the retriever returned nothing usable; "
                "raise its similarity_top_k or check that it indexes the documents."
            )
        texts = [self._source(d, example.qid) for d in chosen]
        present = [i for i, d in enumerate(chosen, 1) if d in gold]
        # The head cut must not silently drop the evidence the target relies on.
        citable = [n for n in present if _visible(example, chosen[n - 1], texts[n - 1])]
        answerable = bool(example.answerable and citable)
        if getattr(example, "evidence_by_doc", None):  # every hop is needed (multi-hop)
            answerable = answerable and len(citable) == len(gold)
        target = (
            format_target(example, citable, self.max_quote_chars) if answerable else self.refusal
        )
        return GroundedContext(
            qid=example.qid,
            question=example.question,
            source_ids=list(chosen),
            source_texts=texts,
            gold_numbers=citable if answerable else present,
            answerable=answerable,
            target=target,
            example=example,
            gold_removed=bool(drop_gold),
        )

    def build_contexts(
        self,
        examples: Sequence[QAExample],
        retrieved: Mapping[str, Sequence[str]] | None = None,
        force_gold: bool = True,
        show_progress: bool = True,
    ) -> list[GroundedContext]:
        """``context_for`` every example; ``retrieved`` (qid -> doc ids) skips retrieval for cached questions."""
        from tqdm.auto import tqdm

        out = []
        for example in tqdm(examples, desc="Building grounded contexts", disable=not show_progress):
            cached = retrieved.get(example.qid) if retrieved is not None else None
            out.append(self.context_for(example, retrieved=cached, force_gold=force_gold))
        return out

    # ------------------------------------------------------------------ dataset
    def to_dataset(self, contexts: Sequence[GroundedContext]) -> datasets.Dataset:
        """TRL conversational prompt-completion rows plus metadata columns (``question``: what
        keeps twin questions under two qids on one side of a validation split)."""
        import datasets

        rows: dict[str, list[Any]] = {
            "prompt": [],
            "completion": [],
            "qid": [],
            "question": [],
            "source_node_ids": [],
            "gold_numbers": [],
            "answerable": [],
            "gold_removed": [],
        }
        for c in contexts:
            rows["prompt"].append(c.messages(self.refusal, self.system_prompt))
            rows["completion"].append([{"role": "assistant", "content": c.target}])
            rows["qid"].append(c.qid)
            rows["question"].append(c.question)
            rows["source_node_ids"].append(list(c.source_ids))
            rows["gold_numbers"].append(list(c.gold_numbers))
            rows["answerable"].append(c.answerable)
            rows["gold_removed"].append(c.gold_removed)
        return datasets.Dataset.from_dict(rows)

    def build(self, examples: Sequence[QAExample], show_progress: bool = True) -> datasets.Dataset:
        """Retrieve, assemble and format: the SFT dataset for ``examples``."""
        if not examples:
            raise ValueError("GroundedSFTBuilder.build: no examples given.")
        return self.to_dataset(self.build_contexts(examples, show_progress=show_progress))


@lru_cache(maxsize=32)
def _source_match_text(text: str) -> str:
    """``match_text`` of a shown source, once per text: a source of megabytes shown to
    every question was read again for each (33 ms a question for 2 MB)."""
    return match_text(text)


def _visible(example: QAExample, doc_id: str, text: str) -> bool:
    """True when the answer (QA) or a rationale sentence (claims) is still in the source text;
    for an example with ``evidence_by_doc`` (multi-hop), when this document's own evidence is."""
    low = _source_match_text(text)
    by_doc = getattr(example, "evidence_by_doc", None)
    if by_doc and doc_id in by_doc:
        return match_text(by_doc[doc_id]) in low
    # claims, and abstractive answers from a QA file (``qa_jsonl``): the evidence quote
    if example.label is not None or getattr(example, "match_evidence", False):
        quotes = [match_text(e)[:60] for e in example.evidence]
        return not quotes or any(q in low for q in quotes)
    return any(match_text(a) in low for a in _answers(example))
