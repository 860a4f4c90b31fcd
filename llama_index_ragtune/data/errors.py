"""``DataError``: the one error type for bad training and evaluation data.

Every data loader (``load_beir``, ``load_squad_v2``, ``load_scifact_claims``,
``RetrievalDataset.load_json``) and the ``RetrievalDataset`` checks raise it. The
message starts with where the problem is (``file:line``, ``file:line:column`` or
``file at $.json.path``), says what is wrong and ends with how to fix it. It
subclasses ``ValueError``, so ``except ValueError`` keeps working.

Example::

    from llama_index_ragtune.data import DataError, load_beir

    try:
        load_beir("my_beir_folder")
    except DataError as err:
        print(err)          # my_beir_folder/qrels/test.tsv:7: relevance score 'high' ...
        err.path, err.line  # (PosixPath('my_beir_folder/qrels/test.tsv'), 7)
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file and line (or JSON path, or ids) and the fix.

    Attributes:
        path: the file at fault, when there is one.
        line: 1-based line number in ``path``, when known.
        location: a JSON path (``$.data[0].paragraphs[2]``) or other position, when known.
        hint: how to fix the input (also part of the message).

    Example::

        raise DataError("relevance score 'x' is not an integer", path="qrels/test.tsv",
                        line=3, hint="use integer grades such as 0, 1, 2")
        # ValueError: qrels/test.tsv:3: relevance score 'x' is not an integer; use integer ...
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
        location: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.location = location
        self.hint = hint
        where = ""
        if self.path is not None:
            where = str(self.path)
            if line is not None:
                where += f":{line}" + (f":{column}" if column is not None else "")
            if location:
                where += f" at {location}"
        elif location:
            where = location
        text = f"{where}: {message}" if where else message
        if hint:
            text += f"; {hint}"
        super().__init__(text)
