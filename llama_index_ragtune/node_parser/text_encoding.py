"""Decoding a document's bytes: a byte-order mark first, then (HTML) the charset the page
declares, else strict UTF-8; never a guess, never mojibake.

:func:`decode_document` is the one place bytes become document text: the pipeline's
``read_documents`` and the structured parsers (a ``Document`` holding bytes in
``text_resource``) both call it.

* A byte-order mark names the encoding (UTF-8 keeps its mark in the text, as it always
  has, for offsets; UTF-16 and UTF-32 lose theirs). Binary data after a UTF-16 / UTF-32
  mark, which decodes to characters of every script, is refused (:func:`reads_as_text`).
* Text that is valid UTF-8 is read as UTF-8, byte for byte, whatever a page declares (a
  template's stale ``<meta charset="iso-8859-1">`` on a UTF-8 page is common; legacy
  encodings almost never form valid multi-byte UTF-8).
* An HTML page that is not UTF-8 is read with the charset it declares in its first
  :data:`PRESCAN_BYTES` bytes (``<meta charset>``, the ``http-equiv`` form, an XML
  declaration), by the HTML standard's rules: ``iso-8859-1`` and ``us-ascii`` mean
  Windows-1252, ``Shift_JIS`` Windows-31J, ``GB2312`` / ``GBK`` GB18030, ``EUC-KR`` Windows-949, a
  ``utf-16`` label UTF-8.
* A declared charset that Python does not know, that is no text encoding an ASCII page
  can declare (``base64``, ``utf-7``, EBCDIC), or that does not decode the bytes is a
  :class:`DocumentEncodingError` naming it; bytes that are not UTF-8 with nothing
  declared are a ``UnicodeDecodeError`` (the caller names the file).

Example::

    from llama_index_ragtune.node_parser.text_encoding import decode_document

    decode_document('<meta charset="windows-1252"><p>Café'.encode("cp1252"), html=True)
    # '<meta charset="windows-1252"><p>Café'
    decode_document("# Hi".encode("utf-16"))                       # '# Hi'
"""

from __future__ import annotations

import codecs
import re
import unicodedata

__all__ = [
    "PRESCAN_BYTES",
    "DocumentEncodingError",
    "declared_charset",
    "decode_document",
    "reads_as_text",
]

#: How far into a page its charset declaration is looked for (the HTML standard's prescan
#: reads 1024 bytes; pages with long comments or scripts before the ``<meta>`` need more).
PRESCAN_BYTES = 4096
_BOMS = (
    (b"\xef\xbb\xbf", "UTF-8", "utf-8"),
    (b"\xff\xfe\x00\x00", "UTF-32", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "UTF-32", "utf-32-be"),
    (b"\xff\xfe", "UTF-16", "utf-16-le"),
    (b"\xfe\xff", "UTF-16", "utf-16-be"),
)
_DECLARED = re.compile(
    rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)"
    rb"|^\s*<\?xml[^>]*?encoding\s*=\s*[\"']\s*([A-Za-z0-9._:-]+)",
    re.I,
)
#: Labels the HTML standard reads as a larger encoding (by Python's codec name).
_WEB_SUPERSETS = {
    "ascii": "windows-1252",
    "iso8859-1": "windows-1252",
    "cp1252": "windows-1252",
    "shift_jis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "iso8859-9": "cp1254",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
    "big5": "big5hkscs",
}
#: Web labels Python has no alias for.
_WEB_ALIASES = {"x-sjis": "cp932", "windows-31j": "cp932", "x-mac-roman": "mac-roman"}
#: Text codecs that no web page is in (they read backslashes, ``+`` or nothing at all).
_NOT_FOR_PAGES = {"unicode-escape", "raw-unicode-escape", "utf-7", "undefined", "idna", "punycode"}
#: Windows-1252 as browsers read it: the five bytes it leaves undefined are C1 controls.
_WINDOWS_1252 = {
    code: char for code in range(0x80, 0xA0) if (char := bytes([code]).decode("cp1252", "ignore"))
}


class DocumentEncodingError(ValueError):
    """Bytes that the encoding a document names (its byte-order mark, its declared
    charset) cannot decode, or a declared charset that cannot be used; ``charset`` names it,
    ``binary`` says the bytes are no text in any encoding (re-encoding will not help).

    Example::

        try:
            decode_document(b'<meta charset="klingon"><p>\\xe9', html=True)
        except DocumentEncodingError as err:
            err.charset                               # 'klingon'
    """

    def __init__(self, message: str, charset: str, binary: bool = False):
        super().__init__(message)
        self.charset = charset
        self.binary = binary

    def __reduce__(self):
        return (type(self), (str(self), self.charset))


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML page declares in its first :data:`PRESCAN_BYTES` bytes (a
    ``<meta charset>``, the ``http-equiv`` form, or an ``<?xml encoding?>`` declaration at
    the start), upper-cased; ``None`` when it declares none.

    Example::

        declared_charset(b'<meta charset="windows-1252"><p>Caf\\xe9</p>')   # 'WINDOWS-1252'
    """
    found = _DECLARED.search(data[:PRESCAN_BYTES])
    if found is None:
        return None
    return (found.group(1) or found.group(2)).decode("ascii").upper()


def _windows_1252(data: bytes) -> str:
    return data.decode("latin-1").translate(_WINDOWS_1252)


def _decoder(label: str):
    """The function that decodes bytes labelled ``label``, or ``None`` for UTF-8 (also a
    ``utf-16`` label: a page that declares it without a byte-order mark is UTF-8)."""
    try:
        name = codecs.lookup(_WEB_ALIASES.get(label.lower(), label)).name
    except LookupError:
        raise DocumentEncodingError(
            f"declares charset {label}, which Python does not know", label
        ) from None
    if name.startswith(("utf-8", "utf-16", "utf-32")):
        return None
    name = _WEB_SUPERSETS.get(name, name)
    if name == "windows-1252":
        return _windows_1252
    info = codecs.lookup(name)
    if (
        not getattr(info, "_is_text_encoding", True)
        or name in _NOT_FOR_PAGES
        or b"<meta charset=".decode(name, "replace") != "<meta charset="
    ):
        raise DocumentEncodingError(
            f"declares charset {label}, which is not a character encoding a web page can "
            "declare (not ASCII-compatible, or not text)",
            label,
        )
    return lambda data: data.decode(name)


#: Characters every text has some of: ASCII (spaces, newlines, digits, markup), other
#: spaces, general and CJK punctuation, fullwidth forms. Binary data read as UTF-16 has
#: under 1 % of them; prose in any script several percent.
_TEXT_LIKE = re.compile("[\x00-\x7f\\s\u2000-\u206f\u3000-\u303f\uff00-\uff65]")
#: Private-use characters and noncharacters, which no prose is written in.
_NOT_WRITTEN = re.compile("[\ue000-\uf8ff\ufdd0-\ufdef\ufffe\uffff\U000f0000-\U0010ffff]")
_SAMPLE_CHARACTERS = 65_536


def reads_as_text(text: str) -> bool:
    """False for binary data that a UTF-16 / UTF-32 byte-order mark made decodable (it
    decodes to characters of every script): at least 32 characters, of which under 2 % are
    text-like (:data:`_TEXT_LIKE`) and over 1 % private-use, noncharacters or unassigned.
    Reads at most the first 65,536 characters.

    Example::

        reads_as_text("返品は30日以内です。")                         # True
        reads_as_text("".join(map(chr, range(0xE000, 0xE100, 3))))  # False
    """
    sample = text[:_SAMPLE_CHARACTERS]
    if len(sample) < 32 or len(_TEXT_LIKE.findall(sample)) >= 0.02 * len(sample):
        return True
    odd = len(_NOT_WRITTEN.findall(sample))
    odd += sum(1 for char in sample if unicodedata.category(char) == "Cn")
    return odd <= 0.01 * len(sample)


def decode_document(data: bytes, html: bool = False) -> str:
    """``data`` as text: by its byte-order mark; else as UTF-8 when it is valid UTF-8; else,
    for an HTML page (``html=True``), in the charset it declares (see the module docs).

    Raises :class:`DocumentEncodingError` when the byte-order mark's or the declared
    encoding does not decode ``data``, or the declared one cannot be used, and
    ``UnicodeDecodeError`` when ``data`` is not UTF-8 and declares nothing usable.

    Example::

        decode_document(b"\\xef\\xbb\\xbf# Hi")                         # '\\ufeff# Hi'
        decode_document(b'<?xml version="1.0" encoding="Shift_JIS"?><p>\\x82\\xa0', html=True)
        # '<?xml version="1.0" encoding="Shift_JIS"?><p>あ'
    """
    for bom, name, codec in _BOMS:
        if data.startswith(bom):
            if codec == "utf-8":
                return data.decode("utf-8")  # the mark kept, as the parsers expect
            try:
                text = data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                raise DocumentEncodingError(
                    f"starts with a {name} byte-order mark but is not {name} text "
                    f"({exc.reason} at byte {exc.start + len(bom)})",
                    name,
                ) from None
            if not reads_as_text(text):
                raise DocumentEncodingError(
                    f"starts with a {name} byte-order mark but is binary data, not {name} "
                    "text (private-use or unassigned characters and next to no spaces, "
                    "ASCII or punctuation). Leave it out, or extract its text with a reader",
                    name,
                    binary=True,
                )
            return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as not_utf8:
        label = declared_charset(data) if html else None
        decode = _decoder(label) if label is not None else None
        if decode is None:
            raise not_utf8 from None
        try:
            return decode(data)
        except UnicodeDecodeError as exc:
            raise DocumentEncodingError(
                f"declares charset {label} but is not {label} text (byte 0x{data[exc.start]:02x} "
                f"at {exc.start}; nor is it UTF-8)",
                label,
            ) from None
