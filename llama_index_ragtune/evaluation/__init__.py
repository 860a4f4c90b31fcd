"""Evaluation that proves each step: retrieval and generation metrics, and the report showing them.

Names are imported lazily from their modules, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "trust_score": "trust_score",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
