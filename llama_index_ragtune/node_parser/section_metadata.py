"""The metadata the structured parsers write on every node, and its share of the token cap.

Each node gets ``section_path`` (the heading chain, joined), ``section_title``,
``block_types``, ``oversized`` and ``partial_unit`` (:data:`PARSER_KEYS`).
:func:`section_plan` gives each section its budget: the cap less the embed-mode
metadata (when counted), with a heading chain that would take more than half of what is
left shown shortened ("…") in ``section_path``. Moved from :mod:`.base`, which still
exports the key names.

Example::

    from llama_index_ragtune.node_parser.section_metadata import section_metadata

    section_metadata(("Returns", "Opened boxes"), "paragraph", " > ")["section_path"]
    # 'Returns > Opened boxes'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llama_index.core.schema import BaseNode, MetadataMode, TextNode

from llama_index_ragtune.node_parser.documents import DocumentParseError, shown_id
from llama_index_ragtune.node_parser.split import clip_to_tokens
from llama_index_ragtune.node_parser.tokens import TokenCounter

SECTION_PATH = "section_path"
SECTION_TITLE = "section_title"
BLOCK_TYPES = "block_types"
OVERSIZED = "oversized"
PARTIAL_UNIT = "partial_unit"
#: Kept out of what the embedding model and the LLM see: the title repeats the
#: end of ``section_path``; block types and the two flags are bookkeeping.
DEFAULT_EXCLUDED_KEYS = (SECTION_TITLE, BLOCK_TYPES, OVERSIZED, PARTIAL_UNIT)
#: The metadata keys the parsers write on every node.
PARSER_KEYS = (SECTION_PATH, SECTION_TITLE, BLOCK_TYPES, OVERSIZED, PARTIAL_UNIT)


def merged_keys(*groups: Sequence[str]) -> list[str]:
    """The keys of ``groups`` in order, each once.

    Example::

        merged_keys(["a", "b"], ["b", "c"])     # ['a', 'b', 'c']
    """
    return list(dict.fromkeys(key for group in groups for key in group))


def section_metadata(path: tuple[str, ...], kinds: str, separator: str, flags: tuple = ()) -> dict:
    """The parser's metadata of a node in the section ``path`` holding blocks ``kinds``;
    ``flags`` are ``(oversized, partial_unit)``, both False when not given.

    Example::

        section_metadata(("A", "B"), "list", " > ")["section_title"]     # 'B'
    """
    oversized, partial = (*flags, False, False)[:2]
    return {
        SECTION_PATH: separator.join(path),
        SECTION_TITLE: path[-1] if path else "",
        BLOCK_TYPES: kinds,
        OVERSIZED: oversized,
        PARTIAL_UNIT: partial,
    }


def section_plan(
    node: BaseNode,
    cap: int,
    count: TokenCounter,
    *,
    counting: bool,
    excluded_keys: Sequence[str],
    separator: str,
) -> Callable[[tuple[str, ...], str], tuple[int, tuple[str, ...]]]:
    """``plan(path, kinds) -> (budget, shown_path)`` for the sections of ``node``.

    The budget is ``cap`` minus the embed-mode metadata (when ``counting``). A heading
    chain that would take more than half of what the document's own metadata
    leaves of the cap (when not ``counting``: more than the cap, so that a heading of
    megabytes is not copied whole onto each of its thousands of nodes) is shown shortened
    ("…") in ``section_path``/``section_title``; the headings stay whole in the node text. ``DocumentParseError``
    (``cause="metadata"``) when the metadata leaves no room for text.

    Example::

        words = lambda text: len(text.split())
        plan = section_plan(Document(text="x"), 64, words, counting=False,
                            excluded_keys=(), separator=" > ")
        plan(("Returns",), "paragraph")     # (64, ('Returns',))
    """
    template = getattr(node, "text_template", TextNode().text_template)
    excluded = merged_keys(node.excluded_embed_metadata_keys, excluded_keys)

    def used(path: tuple[str, ...], kinds: str) -> int:
        probe = TextNode(
            text="",
            metadata={**node.metadata, **section_metadata(path, kinds, separator)},
            excluded_embed_metadata_keys=excluded,
            metadata_template=node.metadata_template,
            metadata_separator=node.metadata_separator,
            text_template=template,
        )
        meta = probe.get_metadata_str(MetadataMode.EMBED)
        return count(template.format(metadata_str=meta, content="")) if meta else 0

    base = used((), "") if counting else 0
    if base >= cap:
        raise DocumentParseError(
            node.node_id,
            f"The embed-mode metadata of document {shown_id(node.node_id)} takes {base} tokens, "
            f"not less than chunk_size={cap}. Shorten the metadata, exclude keys from embedding "
            "(excluded_embed_metadata_keys), raise chunk_size, or set count_metadata=False.",
            cause="metadata",
        )
    allowance = (cap - base) // 2
    cache: dict[tuple, tuple[int, tuple[str, ...]]] = {}

    def plan(path: tuple[str, ...], kinds: str) -> tuple[int, tuple[str, ...]]:
        key = (path, kinds)
        if key not in cache:
            shown, budget = path, cap
            if counting:  # the whole path's metadata is counted once, not again for the budget
                whole = used(path, kinds)
                if whole - base > allowance:
                    shown = clip_path(path, lambda p: used(p, kinds) - base, allowance, count)
                budget = cap - (whole if shown == path else used(shown, kinds))
            elif count(separator.join(path)) > cap:  # a heading longer than a node: not whole
                shown = clip_path(path, lambda p: count(separator.join(p)), cap, count)
            if budget < 1:
                raise DocumentParseError(
                    node.node_id,
                    f"The embed-mode metadata of document {shown_id(node.node_id)} (section "
                    f"'{separator.join(shown)}') takes {cap - budget} tokens, "
                    f"not less than chunk_size={cap}. Shorten the metadata, exclude keys "
                    "from embedding (excluded_embed_metadata_keys), raise chunk_size, or "
                    "set count_metadata=False.",
                    cause="metadata",
                )
            cache[key] = (budget, shown)
        return cache[key]

    return plan


def clip_path(path: tuple[str, ...], extra, allowance: int, count) -> tuple[str, ...]:
    """``path`` with every title clipped to the same number of tokens, so that
    ``extra(path)`` (the tokens it adds to the metadata) is at most ``allowance``;
    only the last title, clipped, when even one token a title is too many.

    Example::

        words = lambda text: len(text.split())
        clip_path(("Returns and refunds",), lambda p: words(" ".join(p)), 1, words)
        # ('Returns…',)
    """
    k = max(0, allowance // len(path))
    while True:
        shown = tuple(clip_to_tokens(title, k, count) for title in path)
        over = extra(shown) - allowance
        if over <= 0:
            return shown
        if k == 0:
            return shown[-1:]
        k = max(0, k - max(1, -(-over // len(path))))
