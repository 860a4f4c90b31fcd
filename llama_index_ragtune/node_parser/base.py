"""Shared base of the structure-aware node parsers (token cap, metadata, validation).

Subclasses only turn a document's text into :class:`~.structure.Block` objects
(``_document_blocks``); splitting, packing, metadata and relationships are
done here once for every format.

Example::

    from llama_index.core import Document
    from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

    parser = StructuredMarkdownNodeParser(chunk_size=64, tokenizer=str.split)
    nodes = parser.get_nodes_from_documents([Document(text="# Returns\\n\\nWithin 30 days.")])
    nodes[0].metadata["section_path"]   # 'Returns'
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.node_parser.node_utils import build_nodes_from_splits, default_id_func
from llama_index.core.schema import BaseNode, Document, MetadataMode, TextNode
from llama_index.core.utils import get_tqdm_iterable

from llama_index_ragtune.node_parser.structure import Block, Chunk, Section, chunk_blocks
from llama_index_ragtune.node_parser.tokens import (
    CallableTokenCounter,
    HFTokenCounter,
    TokenCounter,
)

logger = logging.getLogger(__name__)

SECTION_PATH = "section_path"
SECTION_TITLE = "section_title"
BLOCK_TYPES = "block_types"
OVERSIZED = "oversized"
#: Kept out of what the embedding model and the LLM see: the title repeats the
#: end of ``section_path``; block types and the oversized flag are bookkeeping.
DEFAULT_EXCLUDED_KEYS = (SECTION_TITLE, BLOCK_TYPES, OVERSIZED)

_NON_PRINTABLE = re.compile("[\x01-\x08\x0e-\x1f\x7f\ufffd\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")
_MAX_NON_PRINTABLE_SHARE = 0.1


def document_text(node: BaseNode) -> str:
    """The text of ``node``, or a ``ValueError`` naming it when the content is binary or undecodable.

    Example::

        from llama_index.core.schema import MediaResource

        document_text(Document(text_resource=MediaResource(data=b"# Hi")))     # '# Hi'
        # Document(text="%PDF\\x00\\x01", id_="report.pdf") -> ValueError naming 'report.pdf'
    """
    text = node.get_content(metadata_mode=MetadataMode.NONE) or ""
    resource = getattr(node, "text_resource", None)
    if not text and resource is not None and resource.data:
        try:
            text = base64.b64decode(resource.data).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as err:
            raise ValueError(
                f"Document '{node.node_id}' holds bytes that are not valid UTF-8 text ({err}). "
                "Decode the file with its real encoding, or extract its text with a reader "
                "(e.g. llama_index.core.SimpleDirectoryReader) before parsing."
            ) from err
    if "\x00" in text:
        raise ValueError(
            f"Document '{node.node_id}' contains NUL bytes: it looks like binary content "
            "(a PDF, image or archive), not text. Extract its text with a reader "
            "(e.g. llama_index.core.SimpleDirectoryReader) or leave it out."
        )
    if _SURROGATE.search(text):
        raise ValueError(
            f"Document '{node.node_id}' contains undecodable bytes (lone surrogates from a "
            "lossy decode). Decode the file with its real encoding before parsing."
        )
    visible = len(text) - len(_WHITESPACE.findall(text))
    bad = len(_NON_PRINTABLE.findall(text))
    if visible and bad / visible > _MAX_NON_PRINTABLE_SHARE:
        raise ValueError(
            f"Document '{node.node_id}' is mostly non-printable characters ({bad} of {visible}): "
            "it looks like binary content or text decoded with the wrong encoding. "
            "Decode it correctly or extract its text with a reader before parsing."
        )
    return text


def _merged_keys(*groups: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(key for group in groups for key in group))


class StructuredNodeParser(NodeParser):
    """Base of the structure-aware parsers: one node per section part, capped in tokens.

    Subclasses implement ``_document_blocks(text) -> (blocks, source)``, where
    ``source`` is ``text`` when block offsets point into it, else None.
    """

    chunk_size: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Token cap of a node. None: the tokenizer model's max sequence length minus "
            "its special tokens (254 for the bundled all-MiniLM-L6-v2)."
        ),
    )
    tokenizer_name: str | None = Field(
        default=None,
        description=(
            "Hugging Face tokenizer (local path or hub id) that counts tokens; None: the "
            "bundled default encoder's. Pass a callable as `tokenizer=` instead to count "
            "with any `text -> tokens` function."
        ),
    )
    tokenizer_callable: str | None = Field(
        default=None,
        description=(
            "Qualified name of the custom tokenizer callable in use, if any (set from "
            "`tokenizer=`; recorded so that serialised parsers and pipeline cache keys differ)."
        ),
    )
    count_metadata: bool = Field(
        default=True,
        description=(
            "Subtract the tokens of the node's embed-mode metadata string from the cap, so "
            "that what the embedding model sees (metadata + text) fits. Only with include_metadata."
        ),
    )
    section_separator: str = Field(
        default=" > ", description="Joins the heading chain into `section_path`."
    )
    excluded_embed_metadata_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED_KEYS),
        description="Metadata keys added to every node's excluded_embed_metadata_keys.",
    )
    excluded_llm_metadata_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED_KEYS),
        description="Metadata keys added to every node's excluded_llm_metadata_keys.",
    )

    _counter: TokenCounter | None = PrivateAttr(default=None)

    def __init__(
        self, tokenizer: str | os.PathLike | Callable[[str], Sequence] | None = None, **data: Any
    ) -> None:
        custom = None
        if isinstance(tokenizer, (str, os.PathLike)):
            if data.get("tokenizer_name") not in (None, os.fspath(tokenizer)):
                raise ValueError("Pass the tokenizer either as `tokenizer` or `tokenizer_name`.")
            data["tokenizer_name"] = os.fspath(tokenizer)
        elif tokenizer is not None:
            if not callable(tokenizer):
                raise TypeError(
                    f"{type(self).__name__}: `tokenizer` must be a tokenizer name/path or a "
                    f"callable text -> tokens, got {type(tokenizer).__name__}."
                )
            if data.get("chunk_size") is None:
                raise ValueError(
                    f"{type(self).__name__}: a custom tokenizer callable needs an explicit "
                    "`chunk_size` (the cap cannot be read from a callable)."
                )
            custom = tokenizer
            data["tokenizer_callable"] = getattr(
                tokenizer, "__qualname__", type(tokenizer).__qualname__
            )
            if getattr(tokenizer, "__module__", None):
                data["tokenizer_callable"] = f"{tokenizer.__module__}.{data['tokenizer_callable']}"
        super().__init__(**data)
        if custom is not None:
            self._counter = CallableTokenCounter(custom)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # BaseComponent re-runs __init__ from the fields alone; keep a custom counter too.
        super().__setstate__(state)
        counter = (state.get("__pydantic_private__") or {}).get("_counter")
        if counter is not None:
            self._counter = counter

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> StructuredNodeParser:
        """Rebuild a parser from ``to_dict()`` (core node parsers cannot: their ``id_func``
        serialises to a name). A custom ``id_func`` or tokenizer callable is passed again
        as a keyword argument.

        Example::

            parser = StructuredMarkdownNodeParser(chunk_size=128)
            StructuredMarkdownNodeParser.from_dict(parser.to_dict()).chunk_size     # 128
        """
        data = {**data, **kwargs}
        id_func = data.get("id_func")
        if isinstance(id_func, dict):
            if id_func.get("id_func_name") not in (None, default_id_func.__name__):
                raise ValueError(
                    f"{cls.__name__}.from_dict: the id_func '{id_func.get('id_func_name')}' was "
                    "saved by name only; pass it again: from_dict(data, id_func=my_id_func)."
                )
            data.pop("id_func")
        if "tokenizer" in data and data["tokenizer"] is not None:
            data.pop("tokenizer_callable", None)  # the callable is given again
        return super().from_dict(data)

    @classmethod
    def from_defaults(
        cls,
        chunk_size: int | None = None,
        tokenizer: str | Callable[[str], Sequence] | None = None,
        include_metadata: bool = True,
        include_prev_next_rel: bool = True,
        callback_manager: Any | None = None,
        id_func: Callable | None = None,
        **kwargs: Any,
    ) -> StructuredNodeParser:
        """Build a parser; the callback manager defaults to ``Settings.callback_manager``."""
        from llama_index.core import Settings

        return cls(
            chunk_size=chunk_size,
            tokenizer=tokenizer,
            include_metadata=include_metadata,
            include_prev_next_rel=include_prev_next_rel,
            callback_manager=callback_manager or Settings.callback_manager,
            id_func=id_func,
            **kwargs,
        )

    # ----------------------------------------------------------- tokens

    def _token_counter(self) -> TokenCounter:
        if self._counter is None:
            if self.tokenizer_callable is not None:
                raise ValueError(
                    f"{type(self).__name__} was built with the tokenizer callable "
                    f"'{self.tokenizer_callable}', which did not survive serialisation (a lambda or "
                    "local function cannot be pickled). Pass a module-level function, or a "
                    "tokenizer name/path."
                )
            self._counter = HFTokenCounter(self.tokenizer_name)
        return self._counter

    @property
    def effective_chunk_size(self) -> int:
        """The token cap in use (``chunk_size``, or the tokenizer model's default)."""
        if self.chunk_size is not None:
            return self.chunk_size
        counter = self._token_counter()
        cap = counter.default_cap if isinstance(counter, HFTokenCounter) else None
        if cap is None:
            raise ValueError(
                f"{type(self).__name__}: the max sequence length of tokenizer "
                f"'{self.tokenizer_name}' is unknown; pass `chunk_size`."
            )
        return cap

    # --------------------------------------------------------- subclass hook

    @abstractmethod
    def _document_blocks(self, text: str) -> tuple[list[Block], str | None]:
        """Turn a document's text into blocks; also return the text the offsets point into."""

    # ---------------------------------------------------------- parsing

    def _section_metadata(self, path: tuple[str, ...], kinds: str, oversized: bool) -> dict:
        return {
            SECTION_PATH: self.section_separator.join(path),
            SECTION_TITLE: path[-1] if path else "",
            BLOCK_TYPES: kinds,
            OVERSIZED: oversized,
        }

    def _budget_for(self, node: BaseNode, cap: int, count: TokenCounter):
        cache: dict[tuple, int] = {}

        def budget(section: Section) -> int:
            if not (self.include_metadata and self.count_metadata):
                return cap
            kinds = ",".join(dict.fromkeys(block.kind for block in section.blocks))
            key = (section.path, kinds)
            if key not in cache:
                probe = TextNode(
                    text="",
                    metadata={
                        **node.metadata,
                        **self._section_metadata(section.path, kinds, False),
                    },
                    excluded_embed_metadata_keys=_merged_keys(
                        node.excluded_embed_metadata_keys, self.excluded_embed_metadata_keys
                    ),
                    metadata_template=node.metadata_template,
                    metadata_separator=node.metadata_separator,
                    text_template=getattr(node, "text_template", TextNode().text_template),
                )
                meta = probe.get_metadata_str(MetadataMode.EMBED)
                used = (
                    count(probe.text_template.format(metadata_str=meta, content="")) if meta else 0
                )
                if used >= cap:
                    raise ValueError(
                        f"The embed-mode metadata of document '{node.node_id}' (section "
                        f"'{self.section_separator.join(section.path)}') takes {used} tokens, not "
                        f"less than chunk_size={cap}. Shorten the metadata, exclude keys from "
                        "embedding (excluded_embed_metadata_keys), raise chunk_size, or set "
                        "count_metadata=False."
                    )
                cache[key] = cap - used
            return cache[key]

        return budget

    def _nodes_from(self, node: BaseNode) -> list[BaseNode]:
        text = document_text(node)
        if not text.strip():
            return []
        blocks, source = self._document_blocks(text)
        if not blocks:
            return []
        count = self._token_counter()
        cap = self.effective_chunk_size
        chunks = chunk_blocks(blocks, self._budget_for(node, cap, count), count, source)
        nodes = build_nodes_from_splits([c.text for c in chunks], node, id_func=self.id_func)
        for text_node, chunk in zip(nodes, chunks, strict=True):
            self._annotate(text_node, chunk, node)
        return nodes

    def _annotate(self, text_node: TextNode, chunk: Chunk, parent: BaseNode) -> None:
        if self.include_metadata:
            kinds = ",".join(chunk.block_types)
            text_node.metadata = {
                **parent.metadata,
                **self._section_metadata(chunk.section_path, kinds, chunk.oversized),
            }
        text_node.excluded_embed_metadata_keys = _merged_keys(
            parent.excluded_embed_metadata_keys, self.excluded_embed_metadata_keys
        )
        text_node.excluded_llm_metadata_keys = _merged_keys(
            parent.excluded_llm_metadata_keys, self.excluded_llm_metadata_keys
        )
        text_node.start_char_idx = chunk.start
        text_node.end_char_idx = chunk.end
        if chunk.oversized:
            logger.warning(
                "%s: a node of document '%s' (section '%s', %s) has %d tokens, over its budget "
                "of %d: it is a single line or word that cannot be split without cutting it.",
                type(self).__name__,
                parent.node_id,
                self.section_separator.join(chunk.section_path),
                ",".join(chunk.block_types),
                chunk.tokens,
                chunk.budget,
            )

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in get_tqdm_iterable(nodes, show_progress, "Parsing nodes"):
            out.extend(self._nodes_from(node))
        return out

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]
    ) -> list[BaseNode]:
        # The base class re-derives offsets with str.find on the node text, which can
        # land on an earlier duplicate (or, for HTML, inside the markup); keep ours.
        spans = [
            (getattr(n, "start_char_idx", None), getattr(n, "end_char_idx", None)) for n in nodes
        ]
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node, (start, end) in zip(nodes, spans, strict=True):
            if isinstance(node, TextNode):
                node.start_char_idx, node.end_char_idx = start, end
        return nodes
