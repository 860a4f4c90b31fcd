"""Verifiable rewards for grounded answers: our evaluator's checks as one number per answer.

``grounded_reward`` scores one ``GenerationEvaluator`` row in [0, 1]: the
refusal when the sources lack the answer is worth 1 (anything else 0); on an
answerable question a refusal is worth 0, an answer
``0.4 * answer_score + 0.3 * citation_precision + 0.3 * citation_recall``
(citations checked against the gold source ids, the answer against the gold
answers or label). Nothing here asks a judge model: every part is verified
against the data.

:class:`GroundedReward` wraps it in the reward-function signature of TRL's
``GRPOTrainer`` (``prompts, completions, **dataset_columns -> list[float]``),
and :func:`reward_dataset` writes grounded contexts as a GRPO training set
(``prompt`` plus the columns the reward reads). ``PreferenceBuilder.from_model_failures``
ranks sampled answers with the same score to mine DPO pairs.

Example::

    from trl import GRPOConfig, GRPOTrainer
    from llama_index_ragtune.evaluation.rewards import GroundedReward, reward_dataset

    trainer = GRPOTrainer(
        model=sft_model,
        reward_funcs=[GroundedReward(answer_metric="squad")],
        args=GRPOConfig(output_dir="runs/grpo", num_generations=4, max_completion_length=48),
        train_dataset=reward_dataset(contexts),
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

    from llama_index_ragtune.data.grounded import GroundedContext

REWARD_COLUMNS = (
    "question",
    "source_node_ids",
    "gold_node_ids",
    "gold_answers",
    "answerable",
    "gold_label",
    "source_texts",
    "example_id",
)


def grounded_reward(row: Mapping[str, Any]) -> float:
    """One number per evaluated answer (a ``GenerationEvaluator.evaluate_example`` row), in [0, 1].

    Unanswerable context: 1 for the refusal, 0 otherwise. Answerable: 0 for a
    refusal, else ``0.4 * answer_score + 0.3 * citation_precision + 0.3 * citation_recall``
    (missing citation figures count as 0).

    Example::

        grounded_reward({"answerable": False, "refused": True})    # 1.0
    """
    if not row["answerable"]:
        return 1.0 if row["refused"] else 0.0
    if row["refused"]:
        return 0.0
    return (
        0.4 * float(row.get("answer_score") or 0.0)
        + 0.3 * float(row.get("citation_precision") or 0.0)
        + 0.3 * float(row.get("citation_recall") or 0.0)
    )


class GroundedReward:
    """A TRL reward function: :func:`grounded_reward` of each completion, checked by our evaluator.

    Args:
        evaluator: a ``GenerationEvaluator``; ``None`` builds one with ``answer_metric``.
        answer_metric: ``"squad"`` (token F1) or ``"scifact"`` (label accuracy).

    Called by ``GRPOTrainer`` with the prompts, the sampled completions (strings,
    or assistant messages for conversational data) and the dataset columns of
    :func:`reward_dataset`.

    Example::

        reward = GroundedReward(answer_metric="squad")
        reward(prompts=[prompt], completions=[[{"role": "assistant", "content": "Rouen [2]"}]],
               **{k: [v] for k, v in context.evaluation_kwargs("").items() if k != "answer_text"})
        # [1.0] when source 2 is the gold one and the answer is "Rouen"
    """

    def __init__(self, evaluator: Any | None = None, answer_metric: str = "squad") -> None:
        if evaluator is None:
            from llama_index_ragtune.evaluation.generation import GenerationEvaluator

            evaluator = GenerationEvaluator(answer_metric=answer_metric)
        self.evaluator = evaluator
        self.__name__ = "grounded_reward"  # TRL logs rewards under the function's name

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float]:
        missing = [c for c in ("source_node_ids", "answerable") if c not in columns]
        if missing:
            raise ValueError(
                f"GroundedReward needs the dataset columns {missing}; build the training set "
                "with evaluation.rewards.reward_dataset(contexts)."
            )
        rewards = []
        for i, completion in enumerate(completions):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            kwargs = {k: columns[k][i] for k in REWARD_COLUMNS if k in columns}
            kwargs["source_texts"] = kwargs.get("source_texts") or None
            kwargs["gold_answers"] = kwargs.get("gold_answers") or []
            kwargs["gold_label"] = kwargs.get("gold_label") or None  # "" stands for None
            row = self.evaluator.evaluate_example(answer_text=text, **kwargs)
            rewards.append(grounded_reward(row))
        return rewards


def reward_dataset(contexts: Sequence[GroundedContext]) -> datasets.Dataset:
    """GRPO rows for ``contexts``: ``prompt`` (the grounded messages) plus the reward's columns.

    Example::

        dataset = reward_dataset(builder.build_contexts(examples, retrieved))
        dataset.column_names   # ['prompt', 'question', 'source_node_ids', 'gold_node_ids', ...]
    """
    import datasets

    if not contexts:
        raise ValueError(
            "reward_dataset: no contexts given (use GroundedSFTBuilder.build_contexts)."
        )
    rows: dict[str, list[Any]] = {"prompt": [], **{k: [] for k in REWARD_COLUMNS}}
    for context in contexts:
        rows["prompt"].append(context.messages())
        kwargs = context.evaluation_kwargs("")
        for key in REWARD_COLUMNS:
            value = kwargs[key]
            rows[key].append("" if key == "gold_label" and value is None else value)
    return datasets.Dataset.from_dict(rows)
