"""Data of the scale benchmark (``benchmarks/scale.py``): synthetic and real vectors, exact search.

* :func:`synthetic_vectors`: clustered, locally low-rank 384-d unit vectors (a memory-mapped
  ``.npy``), and :func:`calibrate` to match their neighbour cosines to real vectors;
* :func:`sentence_windows` / :func:`real_queries`: texts from SciFact and SQuAD, and
  :func:`embed_cached` to embed them once with the bundled MiniLM (ONNX int8);
* :func:`exact_top_k`: the exact top-10 (unfiltered and filtered) that recall is measured
  against.

Example::

    from benchmarks.scale_data import exact_top_k
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._paths import display_path

DIM = 384
TOP_K = 10
GROUPS = 100  # the filter field: group = a uniform draw in [0, 100), independent of clusters
FILTERS = {"10%": ("<", 10), "1%": ("==", 7)}


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray, k: int = TOP_K) -> float:
    hits = [len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------- synthetic vectors


def synthetic_vectors(path: Path, n: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Write ``n`` clustered 384-d unit vectors to ``path`` (.npy); see the module docstring."""
    rng = np.random.default_rng(args.seed)  # the mixture: shared by corpus and queries
    centres = _unit(rng.standard_normal((args.clusters, DIM)))
    bases = rng.standard_normal((args.clusters, DIM, args.rank)).astype(np.float32)
    bases /= np.linalg.norm(bases, axis=1, keepdims=True)  # unit directions
    weights = rng.dirichlet(np.ones(args.clusters))
    draw = np.random.default_rng(seed)  # the points
    counts = draw.multinomial(n, weights)
    order = draw.permutation(n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    start = 0
    for k, m in enumerate(counts):
        if not m:
            continue
        # an offset of expected norm ``spread`` in the cluster's subspace, noise of norm ``noise``
        z = draw.standard_normal((m, args.rank)).astype(np.float32)
        block = centres[k] + (z * (args.spread / np.sqrt(args.rank))) @ bases[k].T
        noise = draw.standard_normal((m, DIM)).astype(np.float32)
        block += noise * (args.noise / np.sqrt(DIM))
        rows = order[start : start + m]
        sort = np.argsort(rows)
        out[rows[sort]] = _unit(block)[sort]
        start += m
    out.flush()
    del out
    return {
        "vectors": n,
        "clusters": args.clusters,
        "cluster_rank": args.rank,
        "spread": args.spread,
        "noise": args.noise,
        "cluster_sizes": {
            "min": int(counts.min()),
            "median": int(np.median(counts)),
            "max": int(counts.max()),
        },
    }


def calibrate(real: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Pick ``--spread`` / ``--noise`` from a grid so that, at the real set's size, the synthetic
    vectors' neighbour cosines (1st, 10th) are closest to the real MiniLM vectors' ones."""
    target = nn_stats(real)
    path = Path(args.work_dir) / "calibration.npy"
    grid = []
    for spread in (0.2, 0.35, 0.5, 0.8):
        for noise in (0.1, 0.2, 0.35, 0.5):
            trial = argparse.Namespace(**(vars(args) | {"spread": spread, "noise": noise}))
            synthetic_vectors(path, len(real), trial, seed=args.seed + 3)
            stats = nn_stats(np.load(path, mmap_mode="r"))
            gap = abs(stats["nn1_cosine"] - target["nn1_cosine"]) + abs(
                stats["nn10_cosine"] - target["nn10_cosine"]
            )
            grid.append({"spread": spread, "noise": noise, **stats, "gap": round(gap, 3)})
    path.unlink()
    best = min(grid, key=lambda g: g["gap"])
    args.spread, args.noise = best["spread"], best["noise"]
    print(f"[calibration] real {target} -> spread {args.spread}, noise {args.noise}", flush=True)
    return {"vectors": len(real), "real": target, "grid": grid, "chosen": best}


# ---------------------------------------------------------------------- real texts


def split_sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])", text.strip())
    return [p.strip() for p in parts if len(p.strip()) > 1]


def paragraphs(beir: Path, squad: Path) -> list[list[str]]:
    """Sentences of every SciFact abstract and SQuAD paragraph (file order)."""
    out = []
    with open(beir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            out.append(split_sentences(doc.get("text", "")))
    data = json.loads(squad.read_text(encoding="utf-8"))
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            out.append(split_sentences(paragraph["context"]))
    return [p for p in out if p]


def sentence_windows(paras: list[list[str]], n: int, seed: int) -> list[str]:
    windows = {}
    for sentences in paras:
        for size in (1, 2, 3):
            for i in range(len(sentences) - size + 1):
                windows.setdefault(" ".join(sentences[i : i + size]), None)
    texts = list(windows)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def real_queries(beir: Path, squad: Path, n: int, seed: int) -> list[str]:
    queries = []
    with open(beir / "queries.jsonl", encoding="utf-8") as f:
        queries += [json.loads(line)["text"] for line in f]
    data = json.loads(squad.read_text(encoding="utf-8"))
    queries += [qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    queries = sorted(set(q.strip() for q in queries if q.strip()))
    random.Random(seed).shuffle(queries)
    return queries[:n]


def _digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def embed_cached(texts: list[str], path: Path, label: str) -> dict[str, Any]:
    """MiniLM (ONNX int8) vectors of ``texts`` in ``path`` (.npy); reused when the texts match."""
    meta_path = path.with_suffix(".json")
    digest = _digest(texts)
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("texts_sha256") == digest:
            return meta | {"model": display_path(meta["model"]), "from_cache": True}
    from llama_index_ragtune.embeddings import OnnxEmbedding

    model = OnnxEmbedding(quantize=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(texts), DIM))
    started, cpu = time.perf_counter(), time.process_time()
    step = 4096
    for i in range(0, len(texts), step):
        out[i : i + step] = model.encode(texts[i : i + step], batch_size=64)
        if i // step % 5 == 0:
            print(f"  {label}: {min(i + step, len(texts)):,}/{len(texts):,} embedded", flush=True)
    out.flush()
    wall = time.perf_counter() - started
    meta = {
        "texts": len(texts),
        "texts_sha256": digest,
        "model": display_path(model.model_name),
        "engine": "OnnxEmbedding(quantize=True)",
        "threads": model.num_threads,
        "embed_seconds": round(wall, 1),
        "embed_cpu_seconds": round(time.process_time() - cpu, 1),
        "texts_per_second": round(len(texts) / wall, 1),
        "load_average_after": load_average(),
        "embedded_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta | {"from_cache": False}


# ---------------------------------------------------------------------- exact search


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, groups: np.ndarray
) -> dict[str, np.ndarray]:
    """Exact top-10 ids per query: unfiltered and for each filter, in one pass over the corpus."""
    masks = {"none": None} | {name: _filter_mask(groups, name) for name in FILTERS}
    best = {
        name: (np.full((len(queries), TOP_K), -np.inf), np.zeros((len(queries), TOP_K), int))
        for name in masks
    }
    step = 32_768
    for start in range(0, len(vectors), step):
        chunk = np.ascontiguousarray(vectors[start : start + step])
        scores = queries @ chunk.T  # (queries, chunk)
        for name, mask in masks.items():
            s = scores if mask is None else np.where(mask[start : start + step], scores, -np.inf)
            k = min(TOP_K, s.shape[1])
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            cand_s = np.concatenate([best[name][0], np.take_along_axis(s, part, 1)], axis=1)
            cand_i = np.concatenate([best[name][1], part + start], axis=1)
            top = np.argsort(-cand_s, axis=1, kind="stable")[:, :TOP_K]
            best[name] = (np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1))
    return {name: ids for name, (_, ids) in best.items()}


def _filter_mask(groups: np.ndarray, name: str) -> np.ndarray:
    op, value = FILTERS[name]
    return groups < value if op == "<" else groups == value


def nn_stats(vectors: np.ndarray, sample: int = 200) -> dict[str, float]:
    """Mean cosine of corpus points to their 1st and 10th nearest other corpus point."""
    rows = np.random.default_rng(0).choice(len(vectors), min(sample, len(vectors)), replace=False)
    probe = np.ascontiguousarray(vectors[np.sort(rows)])
    keep = TOP_K + 1  # the point itself (cosine 1) is among its own neighbours
    top = np.full((len(probe), keep), -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), 65_536):
        s = probe @ np.ascontiguousarray(vectors[start : start + 65_536]).T
        if s.shape[1] > keep:
            s = np.partition(s, -keep, axis=1)[:, -keep:]
        top = np.partition(np.concatenate([top, s], axis=1), -keep, axis=1)[:, -keep:]
    top = np.sort(top, axis=1)  # ascending: [-1] is the point itself
    return {
        "nn1_cosine": round(float(top[:, -2].mean()), 3),
        "nn10_cosine": round(float(top[:, 0].mean()), 3),
    }
