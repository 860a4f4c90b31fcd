"""Regression tests from a hostile-input battery of legacy-encoded pages, hostile file names
and pathological markup: HTML pages read in the charset they declare (or their byte-order
mark), control and bidi characters in file names, document ids escaped in every parser
message, unclosed comments / scripts / CDATA at the start of a page."""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document
from llama_index.core.schema import MediaResource
from np_helpers import whitespace_tokens

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)
from llama_index_ragtune.node_parser.text_encoding import decode_document
from llama_index_ragtune.pipeline.sources import read_documents

FEATURES = ["lxml", "html.parser"]
PAGE = "<html><head>{}</head><body><h1>Café « menu » “today” – {}</h1><p>Soup €5</p></body></html>"


def parse(parser_class, text, doc_id="doc", chunk_size=64, **kwargs):
    parser = parser_class(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=text, id_=doc_id)])


def html_from_bytes(data: bytes, doc_id="page") -> list:
    parser = StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=64)
    return parser.get_nodes_from_documents(
        [Document(text_resource=MediaResource(data=data), id_=doc_id)]
    )


# ------------------------------------------------------ charsets and byte-order marks

DECLARED = [
    ('<meta charset="windows-1252">', "cp1252", "x"),
    # iso-8859-1 means Windows-1252 on the web: 0x93 / 0x94 are curly quotes, not C1 codes
    ('<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">', "cp1252", "x"),
    ("<META CHARSET=Shift_JIS>", "shift_jis", "返品について"),
    ('<meta charset="euc-kr">', "euc_kr", "환불"),
    ('<meta charset="koi8-r">', "koi8_r", "Возврат"),
]


@pytest.mark.parametrize(("declaration", "encoding", "word"), DECLARED)
def test_an_html_page_is_read_in_the_charset_it_declares(tmp_path, declaration, encoding, word):
    # was: DataError "not UTF-8 text ... the page declares charset X" with an iconv hint
    page = PAGE.format(declaration, word)
    if encoding not in ("cp1252",):
        page = page.replace("Café « menu » “today” – ", "").replace("€", "")
    (tmp_path / "old.html").write_bytes(page.encode(encoding))
    (tmp_path / "new.html").write_bytes(page.encode("utf-8"))
    docs = {doc.id_: doc.text for doc in read_documents(tmp_path)}
    assert docs["old.html"] == docs["new.html"] == page
    # the parsers read bytes given in text_resource the same way
    assert html_from_bytes(page.encode(encoding))[0].text == html_from_bytes(page.encode())[0].text


def test_an_xml_declaration_names_the_charset():
    page = '<?xml version="1.0" encoding="Shift_JIS"?>\n<html><body><h1>返品</h1><p>3日</p></body></html>'
    assert decode_document(page.encode("shift_jis"), html=True) == page


def test_a_declaration_up_to_4096_bytes_in_is_found(tmp_path):
    page = "<!-- " + "licence text " * 200 + '--><meta charset="windows-1252"><p>Café</p>'
    assert 1024 < page.index("<meta") < 4000
    (tmp_path / "p.html").write_bytes(page.encode("cp1252"))
    assert read_documents(tmp_path)[0].text == page


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("<p>Héllo</p>".encode("utf-16"), "<p>Héllo</p>"),
        ("<p>Héllo</p>".encode("utf-16-be").join([b"\xfe\xff", b""]), "<p>Héllo</p>"),
        ("<p>Héllo</p>".encode("utf-32"), "<p>Héllo</p>"),
        # a UTF-8 mark is kept, as before (offsets; the parsers skip it)
        (b"\xef\xbb\xbf<p>H\xc3\xa9llo</p>", "\ufeff<p>Héllo</p>"),
    ],
)
@pytest.mark.parametrize("name", ["p.html", "p.md", "p.txt"])
def test_a_byte_order_mark_names_the_encoding_of_any_document(tmp_path, data, text, name):
    (tmp_path / name).write_bytes(data)
    assert read_documents(tmp_path)[0].text == text


def test_markdown_and_text_files_honour_only_byte_order_marks(tmp_path):
    # a Markdown file is not a page: a <meta charset> in it is not read as a declaration
    (tmp_path / "notes.md").write_bytes(
        '<meta charset="windows-1252">\n\nCaf\xe9'.encode("latin-1")
    )
    with pytest.raises(DataError, match=r"notes\.md: not UTF-8 text \(byte \d+"):
        read_documents(tmp_path)


@pytest.mark.parametrize(
    ("data", "charset"),
    [
        (b'<meta charset="klingon"><p>Caf\xe9</p>', "KLINGON"),  # unknown to Python
        (b'<meta charset="base64"><p>Caf\xe9</p>', "BASE64"),  # no text encoding
        (b'<meta charset="utf-7"><p>Caf\xe9</p>', "UTF-7"),  # never a page's
        (b'<meta charset="cp037"><p>Caf\xe9</p>', "CP037"),  # EBCDIC: not ASCII-compatible
        (b'<meta charset="euc-jp"><p>Caf\xe9</p>', "EUC-JP"),  # does not decode the bytes
        (b"\xff\xfe<\x00p\x00>\x00\x00\xd8", "UTF-16"),  # a BOM, then a lone surrogate
    ],
)
def test_a_charset_that_cannot_read_the_page_is_an_error_naming_it(tmp_path, data, charset):
    (tmp_path / "ok.html").write_bytes(b"<p>fine</p>")
    (tmp_path / "old.html").write_bytes(data)
    with pytest.raises(DataError) as caught:
        read_documents(tmp_path)
    message = str(caught.value)
    assert caught.value.path == tmp_path / "old.html" and charset in message
    assert "iconv -f ENCODING -t UTF-8" in message
    with pytest.raises(DocumentParseError, match=charset):
        html_from_bytes(data)


def test_valid_utf8_is_read_byte_for_byte_whatever_the_page_declares(tmp_path):
    # a template's stale declaration on a UTF-8 page: reading it as Latin-1 was mojibake
    page = PAGE.format('<meta charset="iso-8859-1">', "日本")
    (tmp_path / "p.html").write_bytes(page.encode("utf-8"))
    assert read_documents(tmp_path)[0].text == page


def test_windows_1252_reads_every_byte():
    # the five bytes Windows-1252 leaves undefined are read as browsers read them
    data = b'<meta charset="windows-1252"><p>\x80\x81\x8d\x93x\x94\x9f</p>'
    assert decode_document(data, html=True).endswith("<p>€\x81\x8d“x”Ÿ</p>")


# --------------------------------------------------------------- file names and ids

BAD_NAMES = ["new\nline.md", "tab\there.md", "red\x1b[31m.md", "del\x7f.md", "evil\u202etxt.md"]
BAD_NAMES += ["sep\u2028x.md", "nel\x85x.md", "cr\rx.md", "sub/dir\x0bx.md"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_file_name_with_a_control_or_bidi_character_is_refused(tmp_path, name):
    # was: read as the document id "new\nline.md", printed raw in logs, reports and JSON
    (tmp_path / "sub").mkdir()
    (tmp_path / name).write_text("# Title\n\nSome text.\n", encoding="utf-8")
    (tmp_path / "ok.md").write_text("# Ok\n\nFine.\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_documents(tmp_path)
    message = str(caught.value)
    assert repr(name) in message and "mv $'" in message
    assert message.isprintable()  # one line, no escape sequence, no reordering


def test_a_parser_message_escapes_an_id_with_control_characters(caplog):
    doc_id = "a\nb\x1b[31m.md"
    with pytest.raises(DocumentParseError) as caught:
        parse(StructuredMarkdownNodeParser, "\x00PK", doc_id=doc_id)
    assert caught.value.document_id == doc_id  # the id itself is kept
    assert repr(doc_id) in str(caught.value) and "\n" not in str(caught.value)
    with caplog.at_level(logging.WARNING):
        parse(StructuredMarkdownNodeParser, "\x00PK", doc_id=doc_id, on_error="skip")
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)
    # an ordinary id prints as before
    with pytest.raises(DocumentParseError, match="Document 'faq.md' contains NUL bytes"):
        parse(StructuredMarkdownNodeParser, "\x00PK", doc_id="faq.md")


# ------------------------------------------------- unclosed comments, scripts, CDATA


@pytest.mark.parametrize("features", FEATURES)
def test_an_unclosed_cdata_section_does_not_show_markup(features):
    # html.parser showed "<![CDATA[ raw <h1>Title" as text; HTML5 and lxml end it at ">"
    for markup, text in [
        ("<![CDATA[ raw <h1>Title</h1><p>Body text</p>", "Title\n\nBody text"),
        ("<p>a</p><![CDATA[ raw <p>Body text</p>", "a\n\nBody text"),
    ]:
        nodes = parse(StructuredHTMLNodeParser, markup, parser_features=features)
        assert [node.text for node in nodes] == [text]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("opener", "name"),
    [("<!-- draft ", "<!--"), ("<script>var x = 1; ", "<script>"), ("<STYLE>p {}", "<style>")],
)
def test_an_unclosed_comment_or_script_hiding_the_page_is_named(caplog, features, opener, name):
    # was: 0 nodes and no word said
    markup = opener + "<h1>Refunds</h1><p>Returns are accepted within thirty days.</p>"
    with caplog.at_level(logging.WARNING):
        nodes = parse(StructuredHTMLNodeParser, markup, doc_id="faq.html", parser_features=features)
    assert nodes == []  # hidden, as a browser hides it
    [record] = [r for r in caplog.records if "never closed" in r.getMessage()]
    assert f"'faq.html': a {name} opened at character 0" in record.getMessage()


def test_closed_comments_and_scripts_say_nothing(caplog):
    markup = "<!-- a --><script>if (a < b) {}</script><!--><h1>T</h1><p>Body text here.</p>"
    with caplog.at_level(logging.WARNING):
        nodes = parse(StructuredHTMLNodeParser, markup)
    assert [node.text for node in nodes] == ["# T\n\nBody text here."]
    assert not caplog.records


# ---------------------------------------------------------- Document objects given


@pytest.mark.parametrize(
    "resource",
    [{"path": "docs/faq.md"}, {"url": "https://example.com/faq.html"}],
)
@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_a_document_holding_its_text_only_by_reference_is_named(resource, parser_class):
    # was: 0 nodes and no word said (the parser does not fetch files or URLs)
    document = Document(text_resource=MediaResource(**resource), id_="faq")
    parser = parser_class(tokenizer=whitespace_tokens, chunk_size=64)
    with pytest.raises(DocumentParseError, match="holds its text only by reference") as caught:
        parser.get_nodes_from_documents([document])
    assert caught.value.document_id == "faq" and next(iter(resource.values())) in str(caught.value)
    # a document with no text at all still gives no nodes, without an error
    assert parser.get_nodes_from_documents([Document(id_="empty")]) == []


# ------------------------------------------------------- line ends that are not lines


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_a_line_separator_in_a_table_header_is_no_line_end(separator):
    # the repeated header of a split table was "| Name" over "| --- | --- |": Python's
    # splitlines() ends lines at U+2028, Markdown does not
    head = f"| Name{separator}of item | Price |\n|:---|---:|\n"
    rows = "".join(f"| item {i} word word word | {i} |\n" for i in range(60))
    nodes = parse(StructuredMarkdownNodeParser, "# T\n\n" + head + rows, chunk_size=40)
    assert len(nodes) > 2
    for node in nodes[1:]:
        assert node.text.startswith(f"| Name{separator}of item | Price |\n| :--- | ---: |\n")
    assert sum(node.text.count("word word word") for node in nodes) == 60


def test_the_unclosed_comment_check_reads_a_run_of_brackets_once():
    # a tag pattern of [^>]* restarted at every "<" of the run: quadratic in its length
    from llama_index_ragtune.node_parser.html_clean import swallowed_by_unclosed

    assert swallowed_by_unclosed("<!-- <p>x " + "<" * 1_000_000) == ("<!--", 0, 1)
    assert swallowed_by_unclosed("<p>a</p><!-- x --><script>a < b</script>") is None
