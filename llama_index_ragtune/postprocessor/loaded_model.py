"""Checks of a cross-encoder the reranker serves with: a loaded model's settings against the
reranker's, and queries longer than the model reads.

Part of :mod:`llama_index_ragtune.postprocessor` (used by :class:`CrossEncoderRerank`).

Example::

    from sentence_transformers import CrossEncoder
    from llama_index_ragtune.postprocessor.loaded_model import check_loaded_settings

    check_loaded_settings(CrossEncoder(path, device="cpu"), max_length=None, device="cpu")  # None
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def check_loaded_settings(loaded: Any, max_length: int | None, device: str | None) -> None:
    """``ValueError`` when ``max_length`` or ``device`` differs from a loaded CrossEncoder's
    own: the model is used as it is (it may be shared, so it is not moved), and the setting
    would be ignored without a word."""
    own = getattr(loaded, "max_length", None)
    if max_length is not None and own != max_length:
        raise ValueError(
            f"CrossEncoderRerank was given a loaded CrossEncoder (max_length {own}), which is "
            f"used as it is: max_length={max_length} would be ignored. Set it on the model "
            f"(cross_encoder.max_length = {max_length}), or build the reranker from its folder "
            "path"
        )
    where = model_device(loaded)
    if device is not None and where is not None and not same_device(device, where):
        raise ValueError(
            f"CrossEncoderRerank was given a loaded CrossEncoder on {where}, which is used "
            f"where it is: device={device!r} would be ignored. Move the model first "
            f"(cross_encoder.model.to({device!r})), leave device=None, or build the reranker "
            "from its folder path"
        )


def model_device(loaded: Any) -> Any:
    """The torch device a loaded model's weights are on (``None`` when it cannot be told)."""
    where = getattr(loaded, "device", None)
    if where is None:
        parameters = getattr(getattr(loaded, "model", None), "parameters", None)
        first = next(iter(parameters()), None) if callable(parameters) else None
        where = getattr(first, "device", None)
    return where


def same_device(wanted: str, where: Any) -> bool:
    """``wanted`` names the device ``where`` (``'cuda'`` names ``cuda:0``, the current one)."""
    import torch

    wanted_device, where_device = torch.device(wanted), torch.device(where)
    if wanted_device.type != where_device.type:
        return False
    if wanted_device.index is None or where_device.type == "cpu":
        return True
    current = torch.cuda.current_device() if where_device.type == "cuda" else 0
    return wanted_device.index == (
        where_device.index if where_device.index is not None else current
    )


def warn_long_query(model: Any, query: str, name: str, *, cut: bool = False) -> bool:
    """Log one warning when ``query`` holds more tokens than ``model`` (a CrossEncoder) reads
    per (query, text) pair: the tokenizer cuts the query (and the texts) to fit, so the
    ranking reads only its start. ``cut``: ``query`` is already the start of a longer one
    (``pair_input.cut_to_model``), so its count is a lower bound. ``True`` once warned (the
    caller stops asking).

    Example::

        warn_long_query(cross_encoder, "what lowers LDL?", "my-reranker")   # False: it fits
    """
    from llama_index_ragtune.postprocessor.pair_input import model_limit

    limit = model_limit(model)
    tokenizer = getattr(model, "tokenizer", None)
    # a token is at least one UTF-8 byte: shorter queries need no tokenizing
    if limit is None or tokenizer is None or len(query.encode()) + 2 <= limit:
        return False
    try:
        tokens = len(tokenizer(query, add_special_tokens=True, verbose=False)["input_ids"])
    except Exception:  # noqa: BLE001 - a custom model's tokenizer: no count, no warning
        return False
    if tokens <= limit:
        return False
    logger.warning(
        "CrossEncoderRerank: a query of %s%d tokens is longer than the cross-encoder %r reads "
        "per (query, text) pair (max_length %d): the query and the node texts are cut to fit, "
        "so nodes are ranked against its start only. Shorten long queries before reranking, "
        "or use a model with a longer max_length. (Said once per reranker.)",
        "more than " if cut else "",
        tokens,
        name,
        limit,
    )
    return True
