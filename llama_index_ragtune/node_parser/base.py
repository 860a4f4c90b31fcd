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

import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.node_parser.node_utils import build_nodes_from_splits, default_id_func
from llama_index.core.schema import BaseNode, Document, NodeRelationship, TextNode
from llama_index.core.utils import get_tqdm_iterable

from llama_index_ragtune.node_parser.documents import (
    DocumentParseError,
    document_text,
    shown_id,
    without_control_characters,
)
from llama_index_ragtune.node_parser.section_metadata import (  # noqa: F401 - re-exported
    BLOCK_TYPES,
    DEFAULT_EXCLUDED_KEYS,
    OVERSIZED,
    PARSER_KEYS,
    PARTIAL_UNIT,
    SECTION_PATH,
    SECTION_TITLE,
    merged_keys,
    section_metadata,
    section_plan,
)
from llama_index_ragtune.node_parser.structure import Block, Chunk, Section, chunk_blocks
from llama_index_ragtune.node_parser.tokens import (
    MAX_CHARS_PER_TOKEN,
    CallableTokenCounter,
    CharBoundedCounter,
    HFTokenCounter,
    TokenCounter,
)

__all__ = ["DocumentParseError", "StructuredNodeParser", "document_text"]

logger = logging.getLogger(__name__)

#: Any non-blank text has at least one token under a usable tokenizer.
_TOKENIZER_PROBE = "Returns are accepted within 30 days."


class StructuredNodeParser(NodeParser):
    """Base of the structure-aware parsers: one node per section part, capped in tokens.

    Subclasses implement ``_document_blocks(text) -> (blocks, source)``, where
    ``source`` is ``text`` when block offsets point into it, else None.

    Per document: empty or whitespace-only text gives no nodes; binary or
    undecodable content, or document metadata that leaves no room under the cap,
    raises a :class:`DocumentParseError` naming the document (``on_error="raise"``,
    the default, so that nothing is lost silently) or is skipped with a warning
    naming it while the other documents are parsed (``on_error="skip"``). Any
    other failure on one document is reported the same way, as a
    ``DocumentParseError`` chained to the original exception. A missing
    tokenizer or an unusable custom tokenizer is a configuration error and is
    raised whatever ``on_error`` says. The few control characters that accepted text
    may hold never reach a node: they are replaced one for one
    (:func:`~.documents.without_control_characters`), so offsets still hold.

    Example::

        from llama_index.core import Document
        from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

        parser = StructuredMarkdownNodeParser(chunk_size=64, tokenizer=str.split, on_error="skip")
        docs = [Document(text="# A\n\nText.", id_="a.md"), Document(text="\x00PK", id_="b.zip")]
        [n.ref_doc_id for n in parser.get_nodes_from_documents(docs)]   # ['a.md'] (b.zip logged)
    """

    #: Whether bytes given in ``text_resource`` are an HTML page (its declared charset read).
    reads_html: ClassVar[bool] = False
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
    on_error: Literal["raise", "skip"] = Field(
        default="raise",
        description=(
            "What a document that cannot be parsed (binary or undecodable content, metadata "
            "larger than the cap) does: 'raise' a DocumentParseError naming it (nothing is "
            "dropped silently), or 'skip' it with a warning naming it and parse the others."
        ),
    )

    _counter: TokenCounter | None = PrivateAttr(default=None)

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk_size_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(
                f"chunk_size must be a positive integer number of tokens, got {value!r}."
            )
        return value

    def __init__(
        self, tokenizer: str | os.PathLike | Callable[[str], Sequence] | None = None, **data: Any
    ) -> None:
        self._check_arguments(data)
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

    @classmethod
    def _check_arguments(cls, data: dict[str, Any]) -> None:
        """Refuse unknown arguments (pydantic would ignore them: a typo, or ``chunk_overlap``)."""
        unknown = sorted(key for key in data if key not in cls.model_fields)
        if not unknown:
            return
        hint = ""
        if "chunk_overlap" in unknown:
            hint = (
                " Nodes do not overlap (they are cut at section, list item, table row and line "
                "boundaries); drop chunk_overlap."
            )
        raise TypeError(
            f"{cls.__name__} got unknown argument(s) {', '.join(map(repr, unknown))}.{hint} "
            f"Its arguments are: tokenizer, {', '.join(cls.model_fields)}."
        )

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

    def _blocks_of(self, node: BaseNode, text: str) -> tuple[list[Block], str | None]:
        """``_document_blocks`` for the document ``node`` (a subclass may name it in warnings)."""
        return self._document_blocks(text)

    # ---------------------------------------------------------- parsing

    def _section_metadata(self, path: tuple[str, ...], kinds: str, flags: tuple = ()) -> dict:
        return section_metadata(path, kinds, self.section_separator, flags)

    def _sections_for(self, node: BaseNode, cap: int, count: TokenCounter):
        """:func:`~.section_metadata.section_plan` for ``node`` with this parser's settings."""
        return section_plan(
            node,
            cap,
            count,
            counting=self.include_metadata and self.count_metadata,
            excluded_keys=self.excluded_embed_metadata_keys,
            separator=self.section_separator,
        )

    def _nodes_from(self, node: BaseNode, count: TokenCounter, cap: int) -> list[BaseNode]:
        text = without_control_characters(document_text(node, html=self.reads_html))
        if not text.strip():
            return []
        blocks, source = self._blocks_of(node, text)
        if not blocks:
            return []
        bounded = CharBoundedCounter(count, MAX_CHARS_PER_TOKEN)
        # Metadata counted like node text, so a heading of one giant "word" (a 1 MB run that a
        # tokenizer reads as one token) is clipped in section_path, not repeated on every node.
        plan = self._sections_for(node, cap, bounded)

        def budget(section: Section) -> int:
            kinds = ",".join(dict.fromkeys(block.kind for block in section.blocks))
            return plan(section.path, kinds)[0]

        chunks = chunk_blocks(blocks, budget, bounded, source)
        nodes = build_nodes_from_splits([c.text for c in chunks], node, id_func=self.id_func)
        for text_node, chunk in zip(nodes, chunks, strict=True):
            self._annotate(text_node, chunk, node, plan)
        self._log_cuts(node, chunks, bounded)
        self._log_shadowed_keys(node)
        return nodes

    def _log_shadowed_keys(self, node: BaseNode) -> None:
        shadowed = [key for key in PARSER_KEYS if key in node.metadata]
        if self.include_metadata and shadowed:
            logger.warning(
                "%s: the metadata of document %s already has the key(s) %s, which the parser "
                "writes on every node; the nodes hold the parser's values. Rename those keys "
                "in the document metadata to keep yours.",
                type(self).__name__, shown_id(node.node_id), ", ".join(shadowed),
            )  # fmt: skip

    def _annotate(self, text_node: TextNode, chunk: Chunk, parent: BaseNode, plan) -> None:
        if self.include_metadata:
            kinds = ",".join(chunk.block_types)
            shown = plan(chunk.section_path, kinds)[1] if chunk.section_path else ()
            text_node.metadata = {
                **parent.metadata,
                **self._section_metadata(shown, kinds, (chunk.oversized, chunk.partial)),
            }
        text_node.excluded_embed_metadata_keys = merged_keys(
            parent.excluded_embed_metadata_keys, self.excluded_embed_metadata_keys
        )
        text_node.excluded_llm_metadata_keys = merged_keys(
            parent.excluded_llm_metadata_keys, self.excluded_llm_metadata_keys
        )
        text_node.start_char_idx = chunk.start
        text_node.end_char_idx = chunk.end

    def _log_cuts(self, parent: BaseNode, chunks: list[Chunk], bounded: CharBoundedCounter) -> None:
        partial = sum(chunk.partial for chunk in chunks)
        by_length = sum(bounded.char_bound(chunk.text) for chunk in chunks if chunk.partial)
        if by_length:
            logger.warning(
                "%s: %d node(s) of document %s were cut at the character bound (%d characters "
                "per token of the cap): the document has words or runs far longer than its "
                "tokens (encoded data, a hash, combining marks?). Check or clean the document.",
                type(self).__name__, by_length, shown_id(parent.node_id), bounded.chars_per_token,
            )  # fmt: skip
        over = [chunk for chunk in chunks if chunk.oversized]
        if partial:
            logger.info(
                "%s: %d node(s) of document %s hold part of a list item, table row, code line "
                "or sentence longer than the cap (cut at sentence, word or character "
                "boundaries; metadata %s=True).",
                type(self).__name__, partial, shown_id(parent.node_id), PARTIAL_UNIT,
            )  # fmt: skip
        for chunk in over:
            logger.warning(
                "%s: a node of document %s (section '%s') has %d tokens, over its budget of %d: "
                "a single character takes more tokens than the budget; raise chunk_size.",
                type(self).__name__, shown_id(parent.node_id),
                self.section_separator.join(chunk.section_path), chunk.tokens, chunk.budget,
            )  # fmt: skip

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        if not nodes:
            return out
        # Configuration errors (a missing tokenizer, say) are not a document's fault: raised
        # here whatever on_error says.
        count, cap = self._token_counter(), self.effective_chunk_size
        if isinstance(count, CallableTokenCounter):
            self._check_tokenizer(count)
        for node in get_tqdm_iterable(nodes, show_progress, "Parsing nodes"):
            try:
                out.extend(self._nodes_from(node, count, cap))
            except Exception as err:
                error = self._document_error(node, err)
                if self.on_error == "raise":
                    if error is err:
                        raise
                    raise error from err
                logger.warning(
                    "Skipped document %s (on_error='skip'): %s", shown_id(node.node_id), error
                )
        return out

    def _check_tokenizer(self, count: TokenCounter) -> None:
        """Raise a ValueError for a custom tokenizer that fails or counts no tokens."""
        try:
            tokens = count(_TOKENIZER_PROBE)
        except Exception as err:
            raise ValueError(
                f"{type(self).__name__}: the tokenizer '{self.tokenizer_callable}' failed on plain "
                f"text ({type(err).__name__}: {err}); it must map text to a sequence of tokens."
            ) from err
        if not isinstance(tokens, int) or tokens < 1:
            raise ValueError(
                f"{type(self).__name__}: the tokenizer '{self.tokenizer_callable}' returned "
                f"{tokens} tokens for {_TOKENIZER_PROBE!r}, so it cannot cap node sizes; pass a "
                "tokenizer that maps text to a non-empty sequence of tokens."
            )

    def _document_error(self, node: BaseNode, err: Exception) -> DocumentParseError:
        """``err`` itself when it already names the document, else a DocumentParseError that does."""
        if isinstance(err, DocumentParseError):
            return err
        return DocumentParseError(
            node.node_id,
            f"{type(self).__name__} could not parse document {shown_id(node.node_id)}: "
            f"{type(err).__name__}: {err} (on_error='skip' skips such a document with a warning "
            "and parses the others).",
        )

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]
    ) -> list[BaseNode]:
        """``NodeParser``'s relationships and metadata merge, keeping our offsets.

        The base class re-derives every node's offsets with ``str.find`` of its text in the
        document, which can land on an earlier duplicate (or, for HTML, inside the markup)
        and, for a node whose text is not a substring (HTML rendered as Markdown, a split
        table with its header repeated), scans the rest of the document: quadratic time
        for a large page of many nodes. The offsets ``_annotate`` set are kept instead.
        """
        sources = [node.source_node for node in nodes]
        for i, node in enumerate(nodes):
            parent_doc = parent_doc_map.get(node.ref_doc_id or "")
            parent_node = sources[i]
            if parent_doc is not None:
                if parent_doc.source_node is not None:
                    node.relationships[NodeRelationship.SOURCE] = parent_doc.source_node
                if self.include_metadata:
                    node.metadata = {**parent_doc.metadata, **node.metadata}
            if parent_node is not None and self.include_metadata:
                node.metadata.update({**parent_node.metadata, **node.metadata})
            if not self.include_prev_next_rel or parent_node is None:
                continue
            for j, relation in ((i - 1, NodeRelationship.PREVIOUS), (i + 1, NodeRelationship.NEXT)):
                other = sources[j] if 0 <= j < len(nodes) else None
                if other is not None and other.node_id == parent_node.node_id:
                    node.relationships[relation] = nodes[j].as_related_node_info()
        return nodes
