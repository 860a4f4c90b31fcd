"""Structure-aware HTML node parser.

The page is parsed leniently with BeautifulSoup (lxml, or the standard
library's ``html.parser``), boilerplate is dropped (scripts, styles, navigation,
page banner/footer and sidebars, form controls, hidden elements: the rules are
in :mod:`.html_clean`; a page that they would empty is kept, with a warning, and
hidden elements that held much of a page's text are named in a warning),
and what remains is converted to the same block model
as Markdown (:mod:`.html_blocks`): h1-h6 sections, paragraphs, nested ul/ol,
dl, tables (thead/tbody/th; colspan and rowspan flattened, with the output
bounded, see :mod:`.html_tables`) rendered as Markdown tables, pre/code (and
xmp/plaintext, whose content is literal text with every tree builder) as fenced
code, and blockquotes. Image alt text, an inline svg's accessible name, figure
captions, details/summary, footnotes and notes are kept (:mod:`.html_text`,
:mod:`.html_clean`).
Splitting and packing are shared with
:class:`~.markdown.StructuredMarkdownNodeParser`, so both give the same text
form and metadata schema.

``start_char_idx``/``end_char_idx`` are left None: a node's text is the
rendered Markdown, not a substring of the raw HTML.

Example::

    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

    html = "<nav>Home</nav><h1>Returns</h1><h2>Opened boxes</h2><p>Within 14 days.</p>"
    doc = Document(text=html, metadata={"store": "VoltHub", "department": "Electronics"})
    nodes = IngestionPipeline(transformations=[StructuredHTMLNodeParser()]).run(documents=[doc])
    nodes[0].metadata["section_path"]   # 'Returns > Opened boxes'
"""

from __future__ import annotations

from typing import ClassVar

from llama_index.core.bridge.pydantic import Field, field_validator

from llama_index_ragtune.node_parser.base import StructuredNodeParser
from llama_index_ragtune.node_parser.html_blocks import (
    DEFAULT_BOILERPLATE_ROLES,
    DEFAULT_BOILERPLATE_TAGS,
    HTMLConverter,
    check_features,
)
from llama_index_ragtune.node_parser.structure import Block


class StructuredHTMLNodeParser(StructuredNodeParser):
    """Split HTML pages into section-aware nodes rendered as Markdown, without boilerplate.

    Metadata, the token cap and the splitting rules are those of
    :class:`~.markdown.StructuredMarkdownNodeParser`; the node text is the
    page rendered as Markdown (tables as Markdown tables), and
    ``start_char_idx``/``end_char_idx`` stay None. Any nesting depth is
    handled (the tree walk is iterative); image alt text, figure captions,
    details/summary, footnotes and text outside table cells are kept.

    Example::

        from llama_index.core import Document
        from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

        parser = StructuredHTMLNodeParser.from_defaults(chunk_size=128)
        html = ("<table><tr><th>Item</th><th>Days</th></tr>"
                "<tr><td>Apples</td><td>2</td></tr></table>")
        parser.get_nodes_from_documents([Document(text=html)])[0].text
        # '| Item | Days |\\n| --- | --- |\\n| Apples | 2 |'
    """

    reads_html: ClassVar[bool] = True
    parser_features: str = Field(
        default="lxml",
        description=(
            "BeautifulSoup tree builder: 'lxml' (lenient, fast) or 'html.parser' (standard "
            "library); falls back to 'html.parser' when lxml is not installed."
        ),
    )
    boilerplate_tags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE_TAGS),
        description=(
            "Elements dropped with their content. header/footer are dropped only as the page's "
            "banner/footer (outside article, aside, main, nav, section and outside a quote, "
            "figure, details, dialog, fieldset, table cell or list item; a banner's h1 that is "
            "the page's only one, not a logo or home link, is kept), aside only as a page "
            "sidebar (outside article, aside, nav, section; footnotes and notes, by role or by "
            "a class such as 'note', 'callout', 'tip' or 'warning', are kept), and form only "
            "when it does not hold the page's content and is in no heading; an svg leaves its "
            "accessible name "
            "(aria-label or title), not its text labels (see html_clean)."
        ),
    )
    boilerplate_roles: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE_ROLES),
        description="Elements with one of these ARIA roles are dropped with their content.",
    )
    drop_hidden: bool = Field(
        default=True,
        description=(
            'Drop hidden elements (hidden, aria-hidden="true", inline display: none / '
            "visibility: hidden or collapse) with their content; a warning names the document "
            "when they held much of its text. False keeps them: for saved pages whose collapsed "
            "FAQ answers or tabs are content."
        ),
    )

    @field_validator("parser_features")
    @classmethod
    def _html_tree_builder(cls, value: str) -> str:
        return check_features(value)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialisation stores for this class."""
        return "StructuredHTMLNodeParser"

    def converter(self) -> HTMLConverter:
        """The HTML-to-blocks converter configured like this parser."""
        return HTMLConverter(
            self.parser_features, self.boilerplate_tags, self.boilerplate_roles, self.drop_hidden
        )

    def _document_blocks(self, text: str) -> tuple[list[Block], str | None]:
        return self.converter().blocks(text), None

    def _blocks_of(self, node, text: str) -> tuple[list[Block], str | None]:
        return self.converter().blocks(text, document_id=node.node_id), None
