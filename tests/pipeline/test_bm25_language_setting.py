"""``PipelineConfig.bm25_language``: one BM25 stemmer (and its stopwords) for the whole run.

A tiny German help centre is tuned with ``bm25_language="german"``: the bundle's BM25
folder records the German stemmer and German stopwords, so ``Lieferungen`` finds the page
about ``Lieferung``; an English-stemmed BM25 over the same nodes finds nothing for it. The
miner and every tuning step used the same language and recorded it. The default
(``"english"``) changes nothing, fingerprint included.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from llama_index_ragtune.data.negatives import HardNegativeMiner
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.pipeline import PipelineConfig
from llama_index_ragtune.retrievers import BM25Retriever
from tests.pipeline.conftest import tune_help_centre

DOCS = {
    "shop/rueckgabe.md": "# Rückgabe\n\n## Elektronik\nGeöffnete Geräte können innerhalb von "
    "vierzehn Tagen zurückgegeben werden.\n\n## Lebensmittel\nBei frischen Lebensmitteln "
    "erstatten wir den Kaufpreis, eine Rückgabe ist nicht nötig.\n",
    "shop/lieferung.md": "# Lieferung\n\n## Versandkosten\nAb sechzig Euro liefern wir kostenlos, "
    "sonst kostet der Versand vier Euro.\n\n## Lieferzeiten\nWir liefern täglich zwischen acht "
    "und zweiundzwanzig Uhr.\n",
    "app/konto.md": "# Konto\n\n## Passwort\nIhr Passwort ändern Sie in den Einstellungen unter "
    "Sicherheit.\n\n## Kündigung\nNach einer Kündigung werden alle Bestellungen nach dreißig "
    "Tagen gelöscht.\n",
    "app/zahlung.md": "# Zahlung\n\n## Kreditkarte\nWir akzeptieren Kreditkarten; Zahlungsdaten "
    "speichern wir verschlüsselt.\n\n## Gutschein\nGutscheine können nicht in Bargeld "
    "umgetauscht werden.\n",
}
# (question: other inflections than the page, gold document, gold section)
QUESTIONS = [
    ("Kann ich ein geöffnetes Gerät zurückgeben?", "shop/rueckgabe.md", "Rückgabe > Elektronik"),
    ("Erstattungen für Lebensmittel", "shop/rueckgabe.md", "Rückgabe > Lebensmittel"),
    ("Was kosten Lieferungen?", "shop/lieferung.md", "Lieferung > Versandkosten"),
    ("Zu welchen Zeiten liefert ihr?", "shop/lieferung.md", "Lieferung > Lieferzeiten"),
    ("Wie ändere ich mein Passwort?", "app/konto.md", "Konto > Passwort"),
    ("Was passiert mit Bestellungen, wenn ich kündige?", "app/konto.md", "Konto > Kündigung"),
    ("Werden Kreditkartendaten verschlüsselt?", "app/zahlung.md", "Zahlung > Kreditkarte"),
    ("Gutschein in Bargeld umtauschen", "app/zahlung.md", "Zahlung > Gutschein"),
]


@pytest.fixture(scope="module")
def german_run(tmp_path_factory, tiny_encoder_path, tiny_causal_lm_path):
    """The German help centre tuned with ``bm25_language="german"`` (no decoder)."""
    root = tmp_path_factory.mktemp("de_help")
    return tune_help_centre(
        root,
        DOCS,
        QUESTIONS,
        tiny_encoder_path,
        tiny_causal_lm_path,
        bm25_language="german",
        similarity_top_k=3,
    )


def test_the_bundle_serves_the_german_stemmer_and_stopwords(german_run):
    result, bundle, _ = german_run
    manifest = json.loads((result.bundle_path / "manifest.json").read_text("utf-8"))
    assert manifest["config"]["bm25_language"] == "german"
    sparse = bundle.retriever.sparse_retriever
    # read back from the persisted BM25 folder
    assert (sparse.tokenizer.language, sparse.tokenizer.stopwords_spec) == ("german", "de")
    top = sparse.retrieve("Was kosten Lieferungen?")
    assert "Ab sechzig Euro liefern wir kostenlos" in top[0].node.get_content()
    # the English stemmer and stopwords over the same nodes: "Lieferungen" keeps its ending
    # and "was" is dropped as an English stopword; nothing is found
    english = BM25Retriever(list(sparse.nodes), similarity_top_k=3)
    assert english.retrieve("Was kosten Lieferungen?") == []
    # English stopwords keep "werden", which matches pages that do not answer
    assert len(english.retrieve("Werden Kreditkartendaten verschlüsselt?")) > 1
    assert len(sparse.retrieve("Werden Kreditkartendaten verschlüsselt?")) == 1


def test_the_mined_bm25_negatives_are_stemmed_as_the_served_retriever_stems(german_run):
    _, _, out = german_run
    mined = RetrievalDataset.load_json(out / "work" / "data" / "retrieval.json")
    assert mined.metadata["mining"]["bm25_language"] == "german"
    pipeline_bm25 = {
        q: [n.doc_id for n in negs if n.source == "bm25"] for q, negs in mined.negatives.items()
    }
    bare = RetrievalDataset(
        queries=mined.queries, corpus=mined.corpus, relevant_docs=mined.relevant_docs
    )

    def bm25_negatives(language: str) -> dict[str, list[str]]:
        miner = HardNegativeMiner(
            sources=("bm25",),
            num_negatives=2,
            range_max=30,
            bm25_language=language,
            show_progress=False,
        )
        found = miner.mine(bare).negatives
        return {q: [n.doc_id for n in found.get(q, [])] for q in mined.queries}

    german = bm25_negatives("german")
    assert {q: pipeline_bm25.get(q, []) for q in mined.queries} == german
    assert german != bm25_negatives("english")


def test_the_tuning_steps_measured_with_the_served_language(german_run):
    _, _, out = german_run
    steps = json.loads((out / "work" / "state.json").read_text("utf-8"))["steps"]
    assert steps["fusion"]["bm25_language"] == "german"
    for part in ("encoder", "reranker"):
        result = json.loads((out / "work" / part / "result.json").read_text("utf-8"))
        assert result["info"]["bm25_language"] == "german", part


def test_the_default_language_is_english_and_keeps_the_recorded_fingerprint():
    config = PipelineConfig()
    assert config.bm25_language == "english"
    assert config.bm25_kwargs() == {"analyzer": "plain"}
    assert config.bm25_options() == {"bm25_analyzer": "plain", "bm25_language": "english"}
    # the settings recorded before bm25_language existed: same fingerprint, same to_dict
    recorded = config.to_dict()
    assert "bm25_language" not in recorded
    before = {k: v for k, v in recorded.items() if k != "bm25_analyzer"}
    text = json.dumps(before, sort_keys=True, default=str)
    assert config.fingerprint() == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    german = PipelineConfig(bm25_language="german")
    assert german.fingerprint() != config.fingerprint()
    assert german.to_dict()["bm25_language"] == "german"
    assert german.bm25_kwargs() == {"analyzer": "plain", "language": "german"}
    assert PipelineConfig(bm25_language=None).bm25_text().tokenizer_kwargs() == {
        "analyzer": "plain",
        "language": None,
        "stopwords": None,
    }


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("German", ValueError, "got 'German'"),
        ("de_DE", ValueError, "e.g. 'german' for a German help centre"),
        (5, TypeError, "must be a stemmer language name or None, got int 5"),
        (["german"], TypeError, "got list ['german']"),
    ],
)
def test_a_wrong_language_is_refused_by_name(value, error, words):
    with pytest.raises(error, match="PipelineConfig.bm25_language") as caught:
        PipelineConfig(bm25_language=value)
    assert words in str(caught.value)
    if error is ValueError:
        assert "german, greek" in str(caught.value)  # the supported ones are listed


def test_a_refresh_of_a_german_bundle_keeps_its_language(german_run, caplog):
    from llama_index_ragtune.pipeline.refresh import _refresh_config

    _, bundle, _ = german_run
    assert _refresh_config(bundle.manifest, bundle.path, None, None).bm25_language == "german"
    # a config built for a refresh has the default "english": the bundle's language is kept
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.refresh"):
        config = _refresh_config(bundle.manifest, bundle.path, PipelineConfig(), None)
    assert config.bm25_language == "german"
    assert config.bm25_kwargs() == {"analyzer": "plain", "language": "german"}
    assert "BM25 language 'german' is kept (the config asked for 'english')" in caplog.text


def test_a_refresh_of_a_bundle_from_before_the_setting_keeps_english(german_run, caplog):
    from llama_index_ragtune.pipeline.refresh import _refresh_config

    _, bundle, _ = german_run
    manifest = json.loads(json.dumps(bundle.manifest))
    del manifest["config"]["bm25_language"]  # as written before the setting existed
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.refresh"):
        config = _refresh_config(manifest, bundle.path, None, None)
    assert config.bm25_language == "english"
    assert "BM25 language" not in caplog.text


def test_the_cli_option_reaches_the_config(tmp_path):
    import argparse

    from llama_index_ragtune.commands.tune import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--docs", str(tmp_path), "--out", str(tmp_path / "out")]
    german = build_config(parser.parse_args([*base, "--bm25-language", "german"]))
    assert german.bm25_language == "german"
    assert build_config(parser.parse_args([*base, "--bm25-language", "none"])).bm25_language is None
    assert build_config(parser.parse_args(base)).bm25_language == "english"
    assert "german" in parser.format_help()
    for wrong in ("German", "klingon"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--bm25-language", wrong])
