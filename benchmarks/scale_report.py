"""Markdown rendering of the scale benchmark's results (``benchmarks/scale.py``).

Example::

    from benchmarks.scale_report import render_markdown
"""

from __future__ import annotations

from typing import Any


def _baseline(results: dict[str, Any]) -> float:
    """The largest RSS an index-building process had after its imports (MiB)."""
    rows = [r for block in results["dense"].values() for r in block["rows"]]
    return max((r.get("baseline_rss_mib", 0.0) for r in rows), default=0.0)


def _gib(mib: float) -> str:
    return f"{mib / 1024:.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# Scale: FAISS index types and BM25 on one machine", ""]
    names = {
        "synthetic": "synthetic clustered vectors",
        "real": "MiniLM (ONNX int8) vectors of sentence windows",
    }
    for name, block in results["dense"].items():
        n = block["rows"][0]["vectors"] if block["rows"] else 0
        lines += [
            f"## Dense, {n:,} {names[name]} (384-d)",
            "",
            "| index | parameters | build s (wall / CPU) | peak RSS GiB | index RSS GiB | on disk GiB "
            "| recall@10 | p50 ms | p95 ms |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in block["rows"]:
            lines.append(
                f"| {r['index']} | {r['params']} | {r['build_s']} / {r['build_cpu_s']} "
                f"| {_gib(r['peak_rss_mib'])} | {_gib(r['index_rss_mib'])} | {_gib(r['disk_mib'])} "
                f"| {r['recall_at_10']:.3f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} |"
            )
        nn = block["neighbours"]
        lines += [
            "",
            f"Mean cosine of a corpus vector to its nearest / 10th nearest neighbour: "
            f"{nn['nn1_cosine']} / {nn['nn10_cosine']}. Flat latency over "
            f"{block['rows'][0]['queries']} queries, the others over {block['rows'][-1]['queries']}.",
            "",
            "| index | setting | recall@10 | p50 ms | p95 ms |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {s['index']} | {s['setting']} | {s['recall_at_10']:.3f} | {s['p50_ms']:.3f} | {s['p95_ms']:.3f} |"
            for s in block["sweep"]
        ]
        lines += [
            "",
            "| index | filter | allowed | path | every hit passes | recall@10 | p50 ms | p95 ms |",
            "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {f['index']} | {f['filter']} | {f['allowed']:,} | {f['path']} | {'yes' if f['all_pass'] else 'NO'} "
            f"| {f['recall_at_10']:.3f} | {f['p50_ms']:.3f} | {f['p95_ms']:.3f} |"
            for f in block["filtered"]
        ]
        lines.append("")
    bm = results.get("bm25")
    if bm:
        lines += [
            f"## BM25 (BM25Retriever, bm25s), {bm['documents']:,} documents",
            "",
            "| documents | mean words | nodes s | index s (wall / CPU) | nodes RSS GiB "
            "| index RSS GiB | peak RSS GiB | p50 ms | p95 ms | queries/s (one at a time) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {bm['documents']:,} | {bm['mean_words']} | {bm['nodes_s']} "
            f"| {bm['index_s']} / {bm['index_cpu_s']} | {_gib(bm['nodes_rss_mib'])} "
            f"| {_gib(bm['index_rss_mib'])} | {_gib(bm['peak_rss_mib'])} | {bm['p50_ms']} "
            f"| {bm['p95_ms']} | {bm['qps_one_at_a_time']} |",
            "",
            f"Documents: two sentences drawn at random from {bm['sentence_pool']:,} SciFact / SQuAD "
            f"sentences; {bm['queries']} real queries ({bm['queries_without_hits']} without any hit).",
            "",
        ]
    target = results.get("target")
    if target:
        verdict = "met" if target["met"] else "NOT met"
        lines += [
            f"Target ({target['goal']}): recall@10 {target['recall_at_10']:.3f} at p50 "
            f"{target['p50_ms']:.3f} ms on {target['vectors']:,} vectors: **{verdict}**.",
            "",
        ]
    data = results["datasets"]
    calibration = results.get("calibration")
    if calibration:
        real, chosen = calibration["real"], calibration["chosen"]
        lines.append(
            f"Calibration: at {calibration['vectors']:,} vectors the real set's mean cosine to the "
            f"1st / 10th neighbour is {real['nn1_cosine']} / {real['nn10_cosine']}; of "
            f"{len(calibration['grid'])} (spread, noise) settings, ({chosen['spread']}, "
            f"{chosen['noise']}) came closest ({chosen['nn1_cosine']} / {chosen['nn10_cosine']})."
        )
    if "synthetic" in data:
        s = data["synthetic"]
        lines.append(
            f"Synthetic: {s['clusters']:,} centres uniform on the sphere, Dirichlet(1) cluster "
            f"sizes ({s['cluster_sizes']['min']:,} to {s['cluster_sizes']['max']:,}), each vector = "
            f"unit centre + a Gaussian offset in a {s['cluster_rank']}-d subspace of its cluster "
            f"(expected norm {s['spread']}) + isotropic Gaussian noise (expected norm {s['noise']}), "
            "normalised."
        )
    if "real" in data:
        r = data["real"]
        emb = r["corpus_embedding"]
        cached = "from the cache; they took" if emb["from_cache"] else "embedded in this run in"
        lines.append(
            f"Real: {r['windows']:,} {r['source']}. Vectors {cached} {emb['embed_seconds']} s "
            f"({emb['texts_per_second']} texts/s, {emb['engine']}, {emb['threads']} threads)."
        )
    machine = results["machine"]
    lines += [
        "",
        "Latency: one query at a time through `FilterableFaissVectorStore.query`, one FAISS "
        "thread, after a warm-up; builds use every core. Peak RSS is the whole process's: "
        f"{_gib(_baseline(results))} GiB of imports before anything is built, plus the "
        "memory-mapped input vectors read while building; index RSS is what the process keeps "
        "once they are unmapped.",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['cores']} cores, {machine['ram_gib']} GiB RAM, faiss "
        f"{machine.get('faiss', '?')}; load average {machine['load_before']} before, "
        f"{machine['load_after']} after (a shared machine).",
    ]
    return "\n".join(lines) + "\n"
