"""Many clients at once against a real uvicorn server: no feedback lost, a feedback id counted once however many post it."""

from __future__ import annotations

import threading

from ragtune import Ragtune
from tests.server.live import Client

THREADS = 8
PER_THREAD = 25


def _parallel(port: int, work) -> list[BaseException]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        c = Client(port)
        try:
            work(c, i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors


def test_concurrent_searches_and_feedback_lose_nothing(service: Client, workspace: Ragtune):
    sent: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def work(c: Client, i: int) -> None:
        for j in range(PER_THREAD):
            out = c.post("/search", {"query": f"router question {i} {j} " + "reset " * (j % 5), "k": 3}).json()
            doc = out["hits"][j % 3]["doc_id"]
            kind = "click" if j % 2 else "rating"
            body = {"query_id": out["query_id"], "doc_id": doc, "type": kind, "feedback_id": f"{i}-{j}", **({"value": 1} if kind == "rating" else {"dwell": float(j)})}
            r = c.post("/feedback", body)
            assert r.status == 200 and r.json()["recorded"], r.body
            with lock:
                sent.append((kind, out["query_id"], doc))

    assert _parallel(service.port, work) == []
    assert len(sent) == THREADS * PER_THREAD
    stats = workspace.feedback.stats()
    assert stats["queries"] == THREADS * PER_THREAD
    assert stats["clicks"] + stats["ratings"] == len(sent)
    logged = {(k, r.qid, d) for r in workspace.feedback.records() for k, events in (("click", r.clicks), ("rating", r.ratings)) for d, _ in events}
    assert logged == set(sent)


def test_one_feedback_id_posted_by_many_clients_at_once_counts_once(service: Client, workspace: Ragtune):
    out = service.post("/search", {"query": "reset the router", "k": 3}).json()
    body = {"query_id": out["query_id"], "doc_id": out["hits"][0]["doc_id"], "type": "click", "feedback_id": "retried"}
    answers: list[str] = []

    def work(c: Client, i: int) -> None:
        for _ in range(5):
            r = c.post("/feedback", body)
            assert r.status == 200, r.body
            answers.append(r.json()["status"])

    assert _parallel(service.port, work) == []
    assert answers.count("recorded") == 1 and answers.count("duplicate") == THREADS * 5 - 1
    assert workspace.feedback.stats()["clicks"] == 1
