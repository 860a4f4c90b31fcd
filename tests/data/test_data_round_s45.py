"""Round s45: SciFact rationale indices read against the wrong sentence, sentence ends after
acronyms and units, and megabyte names echoed whole by evaluation errors and chart tooltips.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from llama_index_ragtune.data.scifact import load_scifact_claims, scifact_sentences
from llama_index_ragtune.data.sentences import split_sentences
from llama_index_ragtune.evaluation._validate import Fields, Invalid
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.results_reading import EvaluationFileError
from llama_index_ragtune.evaluation.svg_charts import (
    Series,
    latency_boxes,
    metric_bars,
    timing_bars,
)

# --------------------------------------------------------------- 1. SciFact sentence indices

# The shape of SciFact doc 20381484: SciFact's splitter broke after each "(ref." before a
# number, so the rationale index of "Here, we show ..." counts three more sentences.
REF_ABSTRACT = (
    "S-nitrosylation is a major mode of signalling. It regulates nuclear proteins, such as "
    "HDAC2 (ref. 2) and PARP1 (ref. 3). Scaffolds such as PSD-95 (ref. 5) and CAPON bind NOS. "
    "Here, we show that SNO-GAPDH transnitrosylates HDAC2. Our findings reveal a mechanism."
)


def _scifact(root: Path, text: str, indices: list[int]) -> Path:
    (root / "qrels").mkdir(parents=True)
    doc = {"_id": "d1", "title": "T", "text": text}
    claim = {
        "_id": "c1",
        "text": "SNO-GAPDH transnitrosylates HDAC2.",
        "metadata": {"d1": [{"label": "SUPPORT", "sentences": indices}]},
    }
    (root / "corpus.jsonl").write_text(json.dumps(doc) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps(claim) + "\n", encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("c1\td1\t1\n", encoding="utf-8")
    return root


def test_scifact_indices_count_the_sentences_its_splitter_made_after_ref(tmp_path) -> None:
    # was "Our findings ..." (index 6 of 5 sentences: past the end, read as the last one)
    root = _scifact(tmp_path / "sf", REF_ABSTRACT, [6])
    claims, _ = load_scifact_claims(root)
    assert claims[0].evidence == ["Here, we show that SNO-GAPDH transnitrosylates HDAC2."]
    assert scifact_sentences(REF_ABSTRACT)[1:5] == [
        "It regulates nuclear proteins, such as HDAC2 (ref.",
        "2) and PARP1 (ref.",
        "3).",
        "Scaffolds such as PSD-95 (ref.",
    ]
    # the generic splitter still keeps "(ref. 2)" inside its sentence
    assert len(split_sentences(REF_ABSTRACT)) == 5


@pytest.mark.parametrize("text", ["No reference here. Two sentences.", "See ref. [1]. Done.", ""])
def test_scifact_sentences_without_ref_numbers_are_split_sentences(text) -> None:
    assert scifact_sentences(text) == split_sentences(text)


def test_real_scifact_rationales_land_on_their_evidence(scifact_dir, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="llama_index_ragtune.data.scifact"):
        claims, _ = load_scifact_claims(scifact_dir, split="test")
    by_id = {c.qid: c for c in claims}
    # claim 1062 "S-nitrosylated GAPDH physiologically transnitrosylates histone deacetylases."
    # (was "Our findings reveal ...", its abstract's last sentence: index 10 of 9)
    assert by_id["1062"].evidence[0].startswith("Here, we show that SNO-GAPDH physiologically")
    # one index past its abstract is left (claim 261: index 12 of doc 10697096's 11 sentences)
    assert "1 rationale sentence indices past the end" in caplog.text
    assert "claim '261', doc '10697096', index 12" in caplog.text
    # claim 528 (HAM/TSP IgG cross-reacts with Tax), was "Immunoglobulin G specifically ..."
    assert by_id["528"].evidence[0].startswith("Antibodies to hnRNP-A1 cross-reacted with")
    train, _ = load_scifact_claims(scifact_dir, split="train")
    by_id = {c.qid: c for c in train}
    # claim 553 (IgA plasma cells for TG2 are scarce): the sentence that contradicts it
    assert by_id["553"].evidence[0].startswith("We found that TG2-specific plasma cells are")


# ------------------------------------------------------- 1b. sentence ends the splitter kept


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("It gradually increased intrarenal NO. In all rats it fell.", "intrarenal NO."),
        ("Voice onset was between 100 and 300 ms. We interpret it.", "300 ms."),
        ("DA rises in worms subjected to DR. DA signalling acts.", "subjected to DR."),
        ("It is a common finding in MS. Little is known.", "finding in MS."),
        ("Stem cells inherit the MR. We further show it.", "inherit the MR."),
        ("Cancer Res; 76(15); 4546-58. ©2016 AACR.", "4546-58."),
        ("Care is also expanding. ### Diabetic retinopathy", "also expanding."),
        (
            "It is called a \u201cbaby machine.\u201d It grows. \u201cOld\u201d cells stay.",
            "It grows.",
        ),
    ],
)
def test_a_sentence_ending_in_an_acronym_unit_or_before_a_symbol_ends(text, first) -> None:
    sentences = split_sentences(text)
    assert len(sentences) >= 2
    assert any(s.endswith(first) for s in sentences)


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith saw it.",
        "Ms. Jones saw it.",
        "Mr. Brown saw it.",
        "They met at St. James's clinic.",
        "See No. 5 and nos. 6 for it.",
        'The outcome is "possible MS" or "not MS. "',
        "Smith et al. reported it in E. coli.",
    ],
)
def test_titles_numbers_and_closing_quotes_still_do_not_end_a_sentence(text) -> None:
    assert split_sentences(text) == [text.strip()]


# --------------------------------------------------- 2. evaluation errors echo a name whole

BIG = "m" * 1_000_000


def test_an_unknown_megabyte_field_is_named_cut_with_how_much_more() -> None:
    data = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 1}, bundle_version="1"
    ).to_dict()
    data[BIG] = 1
    with pytest.raises(EvaluationFileError) as info:
        EvaluationResults.from_dict(data)
    message = str(info.value)
    assert len(message) < 1_000  # was 1,000,040 characters
    assert "… (999,800 more characters)" in message and "unknown field" in message


@pytest.mark.parametrize(
    "read",
    [
        lambda: Fields({BIG: "s"}, "retrieval[0].metrics").number(BIG),
        lambda: Fields({BIG: {}}, "m").child(BIG).text("name"),
        lambda: Fields({" " * 1_000_000: 0.5}, "m").names("metric"),
    ],
)
def test_a_megabyte_key_in_an_error_is_cut(read) -> None:
    with pytest.raises(Invalid) as info:
        read()
    assert len(str(info.value)) < 1_000
    assert "more characters)" in str(info.value)


def test_an_integer_past_floats_is_invalid_not_an_overflow() -> None:
    with pytest.raises(Invalid, match=r"expected a finite number, got 1000.*more characters"):
        Fields({"k": 10**400}, "m").number("k", 0, 1)  # was OverflowError from math.isfinite
    assert Fields({"k": 7}, "m").number("k", 0, 10) == 7.0


# ---------------------------------------------------------- 3. chart tooltips copy a name


def test_a_megabyte_metric_or_system_name_is_cut_in_every_chart() -> None:
    series = [Series("a", "#336699", {BIG: 0.5}), Series(BIG, "#993366", {BIG: 0.25})]
    svg = metric_bars(series, [BIG], BIG)
    assert len(svg) < 60_000  # was over 5 MB: the name in every tooltip and the title
    assert svg.count("… (998,000 more characters)") >= 5
    boxes = latency_boxes([Series(BIG, "#336699", [1.0, 2.0, 3.0])], "latency")
    assert len(boxes) < 30_000 and "998,000 more characters" in boxes
    bars = timing_bars({BIG: 1.0, "index": 2.0}, "timings")
    assert len(bars) < 30_000 and "998,000 more characters" in bars


def test_a_bad_value_under_a_megabyte_step_name_is_named_cut() -> None:
    with pytest.raises(ValueError, match="more characters") as info:
        timing_bars({BIG: float("nan")}, "timings")
    assert len(str(info.value)) < 1_000


def test_short_names_are_drawn_as_before() -> None:
    svg = metric_bars([Series("hybrid", "#336699", {"ndcg@10": 0.5})], ["ndcg@10"], "Quality")
    assert "<title>hybrid — ndcg@10: 0.500</title>" in svg and "more characters" not in svg
