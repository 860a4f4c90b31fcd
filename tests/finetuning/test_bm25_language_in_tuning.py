"""The tuning steps stem with the served BM25's language (``bm25_language``), stopwords following.

A tiny German help centre: the questions use other inflections than their gold passage
(``Lieferungen`` / ``Lieferung``, ``Rückgaben`` / ``Rückgabe``). The English stemmer leaves
German endings on and finds nothing for two of them; the German one finds every gold
passage first. English stopwords on German text keep ``werden``, ``die``, ``ich`` (so a
question matches every page saying ``werden``) and drop German words (``will``, ``was``).
The encoder's validation, the reranker's candidates and the miner must use the served
language, and record it.
"""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.data.negatives import HardNegativeMiner
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
from llama_index_ragtune.retrievers.bm25_index import (
    BM25Text,
    BM25Tokenizer,
    language_stopwords,
    stemmer_languages,
)
from tests.finetuning.conftest import help_centre, hybrid_evaluator

CORPUS = {
    "returns": "Geöffnete Geräte können innerhalb von vierzehn Tagen zurückgegeben werden.",
    "fresh": "Bei frischen Lebensmitteln erstatten wir den Kaufpreis, eine Rückgabe ist nicht nötig.",
    "fees": "Ab sechzig Euro ist die Lieferung kostenlos, sonst kostet der Versand vier Euro.",
    "slots": "Wir liefern täglich zwischen acht und zweiundzwanzig Uhr.",
    "password": "Ihr Passwort ändern Sie in den Einstellungen unter Sicherheit.",
    "delete": "Nach einer Kündigung werden alle Bestellungen nach dreißig Tagen gelöscht.",
    "cards": "Wir akzeptieren Kreditkarten und speichern Zahlungsdaten verschlüsselt.",
    "gift": "Gutscheine können nicht in Bargeld umgetauscht werden.",
}
QUESTIONS = {
    "returns": "Kann ich ein geöffnetes Gerät zurückgeben?",
    "fresh": "Rückgaben frischer Lebensmittel",
    "fees": "Was kosten Lieferungen?",
    "slots": "tägliche Lieferzeit",
    "password": "Passwörter ändern",
    "delete": "Was passiert nach Kündigungen mit meiner Bestellung?",
    "cards": "Werden Kreditkartendaten verschlüsselt gespeichert?",
    "gift": "Gutschein in Bargeld umtauschen",
}


def german_help_centre() -> RetrievalDataset:
    return help_centre(CORPUS, QUESTIONS)


def hits(rankings: dict[str, list[tuple[str, float]]]) -> dict[str, list[str]]:
    return {q: [doc for doc, _ in ranked] for q, ranked in rankings.items()}


def test_the_stopwords_follow_the_language_unless_given():
    german = BM25Tokenizer(language="german")
    assert german.stopwords_spec == "de"
    # German stopwords go, German words that are English stopwords stay
    assert german("Ich will die Rückgabe, was nun?") == ["ruckgab"]
    english_list = BM25Tokenizer(language="german", stopwords="en")
    assert english_list("Ich will die Rückgabe, was nun?") == ["ich", "die", "ruckgab", "nun"]
    assert BM25Tokenizer().stopwords_spec == "en"  # English as before
    assert BM25Tokenizer(language=None).stopwords_spec is None  # no language: no list
    assert language_stopwords("finnish") is None  # a stemmer without a bm25s list
    assert language_stopwords("porter") == "en"
    # PyStemmer's aliases stay accepted as the tokenizer accepts them; a bm25s code keeps its list
    assert BM25Text(language="de").tokenizer_kwargs()["stopwords"] == "de"
    assert HardNegativeMiner(sources=("bm25",), bm25_language="de").bm25_language == "de"
    assert BM25Text(language="french").tokenizer_kwargs() == {
        "analyzer": "plain",
        "language": "french",
        "stopwords": "fr",
    }
    assert BM25Text(language="french", stopwords=["le"]).tokenizer_kwargs()["stopwords"] == ["le"]


def test_the_german_evaluator_finds_every_gold_passage_the_english_one_misses():
    data = german_help_centre()
    gold = {q: docs[0] for q, docs in data.relevant_docs.items()}
    german = hits(hybrid_evaluator(data, bm25_language="german").bm25_rankings())
    assert {q: ranked[:1] for q, ranked in german.items()} == {q: [d] for q, d in gold.items()}
    assert german["q_cards"] == ["cards"]  # "werden" is a German stopword: no noise
    english = hits(hybrid_evaluator(data).bm25_rankings())
    # "Lieferungen", "Rückgaben" keep their German endings: no term in common with the gold
    assert english["q_fees"] == [] and english["q_fresh"] == []
    assert english["q_cards"][:1] == ["cards"] and len(english["q_cards"]) > 1


def test_the_encoder_engine_validates_with_and_records_the_language(tiny_encoder_path, tmp_path):
    data = german_help_centre()
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        eval_points=0,
        fusion={"fusion_mode": "rrf", "alpha": 0.5},
        bm25_language="german",
        args=EncoderFinetuneEngine.default_args(
            tmp_path, max_steps=1, per_device_train_batch_size=4, save_strategy="no"
        ),
        show_progress=False,
    )
    assert engine._validation_evaluator(data).bm25_language == "german"
    result = engine.finetune()
    assert result.info["bm25_language"] == "german"
    assert result.info["bm25_analyzer"] == "plain"
    assert engine.evaluator.bm25_language == "german"
    decision = json.loads(engine.decision_path.read_text("utf-8"))
    assert decision["bm25_language"] == "german"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_reranker_candidates_come_from_the_german_bm25(make_tiny_encoder, tmp_path, seed):
    # a seeded random encoder (its dense side still moves the English order; some seeds
    # happen to rank every gold first): the session's shared one is initialised from
    # whatever the global RNG holds when a test first asks for it, so the outcome depended
    # on which tests ran before
    tiny_encoder_path = make_tiny_encoder(tmp_path / "encoder", seed=seed)
    data = german_help_centre()
    mrr = {}
    for language in ("english", "german"):
        engine = RerankerFinetuneEngine(
            data,
            model=tiny_encoder_path,
            val_dataset=data,
            encoder=tiny_encoder_path,
            rerank_depth=4,
            fusion={"fusion_mode": "minmax", "alpha": 0.1},  # mostly BM25's order
            bm25_language=language,
            args=RerankerFinetuneEngine.default_args(tmp_path / language),
            show_progress=False,
        )
        base, _, _ = engine._evaluators(data)
        mrr[language] = base.baseline()["mrr@10"]
    # the same random encoder: only the BM25 side differs, and the German one ranks every
    # gold passage first
    assert mrr["german"] == 1.0
    assert mrr["english"] < 1.0


def test_the_reranker_engine_records_the_language_of_its_candidates(tiny_encoder_path, tmp_path):
    data = german_help_centre()
    engine = RerankerFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        encoder=tiny_encoder_path,
        rerank_depth=4,
        budget=None,
        eval_points=0,
        bm25_language="german",
        args=RerankerFinetuneEngine.default_args(
            tmp_path, max_steps=1, per_device_train_batch_size=4, save_strategy="no"
        ),
        show_progress=False,
    )
    info = engine.finetune().info
    assert (info["bm25_analyzer"], info["bm25_language"]) == ("plain", "german")


def test_the_miner_stems_and_drops_stopwords_in_the_language_and_records_it():
    data = german_help_centre()

    def mined(**kwargs) -> RetrievalDataset:
        miner = HardNegativeMiner(
            sources=("bm25",), num_negatives=3, range_max=8, show_progress=False, **kwargs
        )
        return miner.mine(data)

    german = mined(bm25_language="german")
    # with German stopwords no page shares a term with the card question but its gold page
    assert not german.negatives.get("q_cards")
    assert german.metadata["mining"]["bm25_language"] == "german"
    assert german.metadata["mining"]["bm25_analyzer"] == "plain"
    english = mined()
    assert english.metadata["mining"]["bm25_language"] == "english"
    # English stopwords keep "werden": pages saying it are mined as negatives
    assert {n.doc_id for n in english.negatives["q_cards"]} >= {"gift", "returns"}


@pytest.mark.parametrize("value", ["German", "de_DE", "klingon", 5])
def test_a_wrong_language_is_refused_by_name(value, tiny_encoder_path, tmp_path):
    data = german_help_centre()
    with pytest.raises(ValueError, match="HybridRetrievalEvaluator: bm25_language must be one of"):
        hybrid_evaluator(data, bm25_language=value)
    with pytest.raises(ValueError, match="HardNegativeMiner: bm25_language must be one of"):
        HardNegativeMiner(sources=("bm25",), bm25_language=value)
    for engine in (EncoderFinetuneEngine, RerankerFinetuneEngine):
        with pytest.raises(ValueError, match=f"{engine.__name__}: bm25_language") as caught:
            engine(
                data,
                model=tiny_encoder_path,
                bm25_language=value,
                args=engine.default_args(tmp_path),
            )
        message = str(caught.value)
        assert "german" in message and "or None (no stemming)" in message
    assert "german" in stemmer_languages()


def test_no_language_means_no_stemming_and_no_stopwords():
    data = german_help_centre()
    bare = hybrid_evaluator(data, bm25_language=None)
    assert bare.bm25_language is None
    ranked = hits(bare.bm25_rankings())
    assert ranked["q_gift"][:1] == ["gift"]  # the same words still match
    assert ranked["q_fees"] == []  # "Lieferungen" is not "Lieferung" unstemmed
