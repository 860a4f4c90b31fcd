"""Evaluation that proves each step: retrieval and generation metrics, and the report showing them.

Names are imported lazily from their modules, so importing this package is cheap.
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.evaluation.dashboard import render_html, write_report
    from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
    from llama_index_ragtune.evaluation.entailment import CrossEncoderEntailment, LLMJudgeEntailment
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.evaluation.generation_report import GenerationReport
    from llama_index_ragtune.evaluation.refusal_calibration import (
        RefusalCombination,
        ThresholdChoice,
        choose_refusal_threshold,
        fit_refusal_combination,
        refusal_auc,
    )
    from llama_index_ragtune.evaluation.reliability import (
        expected_calibration_error,
        reliability_bins,
    )
    from llama_index_ragtune.evaluation.report import (
        RetrievalReport,
        compare_reports,
        reports_table,
    )
    from llama_index_ragtune.evaluation.report_summary import business_proxies
    from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults
    from llama_index_ragtune.evaluation.retrieval import RetrievalEvaluator
    from llama_index_ragtune.evaluation.rewards import (
        GroundedReward,
        grounded_reward,
        reward_dataset,
    )
    from llama_index_ragtune.evaluation.system_result import Decision, RefusalScores, SystemResult
    from llama_index_ragtune.evaluation.trust import trust_score

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "RetrievalEvaluator": "retrieval",
    "RetrievalReport": "report",
    "compare_reports": "report",
    "reports_table": "report",
    "GenerationEvaluator": "generation",
    "GenerationReport": "generation_report",
    "refusal_auc": "refusal_calibration",
    "choose_refusal_threshold": "refusal_calibration",
    "ThresholdChoice": "refusal_calibration",
    "RefusalCombination": "refusal_calibration",
    "fit_refusal_combination": "refusal_calibration",
    "trust_score": "trust",
    "GroundedReward": "rewards",
    "grounded_reward": "rewards",
    "reward_dataset": "rewards",
    "CrossEncoderEntailment": "entailment",
    "LLMJudgeEntailment": "entailment",
    "EvaluationResults": "results",
    "EvaluationFileError": "results",
    "SystemResult": "system_result",
    "RefusalScores": "system_result",
    "Decision": "system_result",
    "reliability_bins": "reliability",
    "expected_calibration_error": "reliability",
    "business_proxies": "report_summary",
    "render_html": "dashboard",
    "render_markdown": "dashboard_markdown",
    "write_report": "dashboard",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
