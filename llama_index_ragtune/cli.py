"""The ``ragtune`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their command runs,
so ``ragtune --help`` is instant. A ``COMMANDS`` entry is either a group of
commands (``ragtune train encoder``) or a single command (``ragtune report``).

Example::

    ragtune bench retrieval --beir ../shared/data/scifact --split test
    ragtune train encoder --beir ../shared/data/scifact --out runs/encoder
    ragtune report runs/bundle/evaluation.json --out runs/report
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command group -> name -> (module, one-line help), or single command -> (module, one-line help)
COMMANDS: dict[str, dict[str, tuple[str, str]] | tuple[str, str]] = {
    "bench": {
        "retrieval": (
            "llama_index_ragtune.bench.retrieval",
            "BM25 / dense / hybrid / reranked retrieval on a BEIR set",
        ),
        "tuning": (
            "llama_index_ragtune.bench.tuning",
            "encoder and reranker fine-tuning ablation on a BEIR set",
        ),
        "generation": (
            "llama_index_ragtune.bench.generation",
            "base vs grounded SFT vs SFT+DPO decoder",
        ),
    },
    "train": {
        "encoder": (
            "llama_index_ragtune.commands.train_encoder",
            "fine-tune the bi-encoder with mined hard negatives",
        ),
        "reranker": (
            "llama_index_ragtune.commands.train_reranker",
            "fine-tune the cross-encoder reranker",
        ),
        "decoder": (
            "llama_index_ragtune.commands.train_decoder",
            "grounded SFT (+ DPO) of the decoder",
        ),
    },
    "report": (
        "llama_index_ragtune.commands.report",
        "evaluation JSON -> one self-contained HTML page with charts + a Markdown summary",
    ),
}


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)
    # Only the module of the command actually invoked is imported.
    wanted = tuple(argv[:2])
    for group, commands in COMMANDS.items():
        if isinstance(commands, tuple):  # a single command: ragtune <name> ...
            _add_command(groups, group, commands, wanted[:1] == (group,))
            continue
        group_parser = groups.add_parser(group, help=f"{group} commands")
        sub = group_parser.add_subparsers(dest="command", required=True)
        for name, entry in commands.items():
            _add_command(sub, name, entry, wanted == (group, name))
    return parser


def _add_command(
    subparsers: argparse._SubParsersAction, name: str, entry: tuple[str, str], wanted: bool
) -> None:
    module, help_text = entry
    cmd = subparsers.add_parser(name, help=help_text, description=help_text)
    if wanted:
        mod = importlib.import_module(module)
        mod.add_arguments(cmd)
        cmd.set_defaults(_run=mod.run)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
