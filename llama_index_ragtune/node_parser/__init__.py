"""Structure-aware node parsers for Markdown and HTML.

Both keep lists, tables and code blocks whole, cap nodes in tokens of the
embedding model, and add ``section_path`` / ``section_title`` /
``block_types`` / ``oversized`` metadata on top of the document's own.

Example::

    from llama_index.core.ingestion import IngestionPipeline
    from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

    pipeline = IngestionPipeline(transformations=[StructuredHTMLNodeParser()])
"""

from llama_index_ragtune.node_parser.html import StructuredHTMLNodeParser
from llama_index_ragtune.node_parser.markdown import StructuredMarkdownNodeParser

__all__ = ["StructuredHTMLNodeParser", "StructuredMarkdownNodeParser"]
