"""Structure-aware node parsers for Markdown and HTML.

Both keep lists, tables and code blocks whole when they fit, cap nodes in
tokens of the embedding model (a single list item, table row, code line or
sentence longer than the cap is cut at sentence, then word, then character
boundaries and marked ``partial_unit``), and add ``section_path`` /
``section_title`` / ``block_types`` / ``oversized`` / ``partial_unit``
metadata on top of the document's own. A document that cannot be parsed
raises a :class:`DocumentParseError` naming it, or is skipped with a warning
(``on_error="skip"``).

Example::

    from llama_index.core.ingestion import IngestionPipeline
    from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

    pipeline = IngestionPipeline(transformations=[StructuredHTMLNodeParser(on_error="skip")])
"""

from llama_index_ragtune.node_parser.documents import DocumentParseError
from llama_index_ragtune.node_parser.html import StructuredHTMLNodeParser
from llama_index_ragtune.node_parser.markdown import StructuredMarkdownNodeParser

__all__ = ["DocumentParseError", "StructuredHTMLNodeParser", "StructuredMarkdownNodeParser"]
