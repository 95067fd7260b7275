"""IR metrics (trec_eval definitions, as BEIR/pytrec_eval use them) and BEIR query/qrels loading."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ragtune.errors import InputError

__all__ = ["evaluate_run", "load_beir_qrels", "load_beir_queries", "mrr_at_k", "ndcg_at_k", "recall_at_k"]

Qrels = Mapping[str, Mapping[str, float]]


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear graded gains ``rel / log2(rank + 1)`` (trec_eval's ``ndcg_cut``)."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant doc within the top k (0 if none)."""
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, float], k: int) -> float:
    """Share of the relevant docs found in the top k."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, MRR@10, Recall@10 and Recall@100 over the queries of ``qrels`` that have a relevant doc."""
    qids = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not qids:
        return {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
    sums = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
    for q in qids:
        ranked = run.get(q, [])
        rels = qrels[q]
        sums["ndcg@10"] += ndcg_at_k(ranked, rels, 10)
        sums["mrr@10"] += mrr_at_k(ranked, rels, 10)
        sums["recall@10"] += recall_at_k(ranked, rels, 10)
        sums["recall@100"] += recall_at_k(ranked, rels, 100)
    return {k: v / len(qids) for k, v in sums.items()}


def load_beir_queries(root: str | Path) -> dict[str, str]:
    """``{query_id: text}`` from a BEIR ``queries.jsonl`` (query ``metadata`` is never read)."""
    path = Path(root) / "queries.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: missing; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/")
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out[str(obj["_id"])] = str(obj["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{lineno}: malformed query line ({exc})") from exc
    return out


def load_beir_qrels(root: str | Path, split: str) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: grade}}`` from ``qrels/SPLIT.tsv`` (header ``query-id corpus-id score``)."""
    path = Path(root) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        avail = sorted(p.stem for p in (Path(root) / "qrels").glob("*.tsv")) if (Path(root) / "qrels").is_dir() else []
        raise InputError(f"{path}: no qrels for split {split!r}; available splits: {avail or 'none'}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, 1):
            if lineno == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if not row:
                continue
            if len(row) < 3:
                raise InputError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: score {row[2]!r} is not an integer") from exc
    return qrels
