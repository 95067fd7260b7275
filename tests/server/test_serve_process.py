"""`ragtune serve` as its own process; version swaps made by other processes; /docs offline; CORS; the missing extra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ragtune import Ragtune
from tests.server.live import Client, free_port, running

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ragtune.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env or _env(), timeout=300)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAGTUNE_API_KEY"}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_and_redoc_load_only_local_files(service: Client):
    for page in ("/docs", "/redoc"):
        r = service.get(page)
        assert r.status == 200
        html = r.body.decode()
        parser = _Links()
        parser.feed(html)
        urls = parser.urls + re.findall(r"""url:\s*['"]([^'"]+)['"]""", html) + re.findall(r"""spec-url=['"]([^'"]+)['"]""", html)
        assert urls, html
        assert not [u for u in urls if "//" in u], f"{page} refers to another host: {urls}"
        assert "cdn" not in html.lower() and "googleapis" not in html
        for url in urls:
            assert service.get(url).status == 200, url
    spec = service.get("/openapi.json").json()
    assert {"/search", "/feedback", "/status", "/versions", "/trial", "/refresh", "/rollback", "/health"} <= set(spec["paths"])
    assert "FeedbackRequest" in spec["components"]["schemas"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])


def test_cors_lets_only_the_configured_origins_in(workspace: Ragtune):
    with running(workspace, cors_origins=["http://app.example"]) as port:
        c = Client(port)
        pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        r = c.request("OPTIONS", "/feedback", headers=pre)
        assert r.status == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
        r = c.post("/search", {"query": "reset", "k": 1}, headers={"Origin": "http://app.example"})
        assert r.status == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
        r = c.request("OPTIONS", "/feedback", headers={**pre, "Origin": "http://evil.example"})
        assert r.status == 400 and "access-control-allow-origin" not in r.headers
        r = c.post("/search", {"query": "reset", "k": 1}, headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        c.close()


def test_versions_swapped_by_other_processes_are_served_without_restart(service: Client, workspace: Ragtune, docs_jsonl: Path):
    ws = str(workspace.ws.root)
    assert service.post("/search", {"query": "reset", "k": 2}).json()["version"] == "v0001"
    docs_jsonl.write_text(docs_jsonl.read_text(encoding="utf-8").replace("ten seconds", "twelve seconds"), encoding="utf-8")
    res = _cli("-q", "-w", ws, "index", str(docs_jsonl))  # another process indexes
    assert res.returncode == 0, res.stderr
    out = service.post("/search", {"query": "hold the reset button for twelve seconds", "k": 8}).json()
    assert out["version"] == "v0002"
    assert "twelve seconds" in next(h["text"] for h in out["hits"] if h["doc_id"] == "d1")
    res = _cli("-q", "-w", ws, "rollback", "v0001")  # another process rolls back
    assert res.returncode == 0, res.stderr
    out = service.post("/search", {"query": "hold the reset button", "k": 8}).json()
    assert out["version"] == "v0001" and "ten seconds" in next(h["text"] for h in out["hits"] if h["doc_id"] == "d1")
    assert [v["name"] for v in service.get("/versions").json() if v["current"]] == ["v0001"]


@pytest.fixture()
def served(workspace: Ragtune) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "-w", str(workspace.ws.root), "serve", "--port", str(port), "--cors-origin", "http://a.example", "--no-access-log"],
        cwd=ROOT, env=_env(RAGTUNE_API_KEY="k1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(30)


def test_ragtune_serve_runs_prints_its_url_and_reads_the_key_from_the_environment(served: tuple[subprocess.Popen[str], int], docs_jsonl: Path, workspace: Ragtune):
    proc, port = served
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"http://127.0.0.1:{port}" in line and "API docs at /docs" in line, line
    c = Client(port)
    deadline = time.monotonic() + 120
    while True:
        try:
            if c.get("/health").status == 200:
                break
        except OSError:
            c.close()
            c = Client(port)
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    out = c.post("/search", {"query": "reset", "k": 2}).json()
    assert c.post("/feedback", {"query_id": out["query_id"], "doc_id": out["hits"][0]["doc_id"], "type": "click", "feedback_id": "x"}).json()["recorded"]
    assert workspace.feedback.stats()["clicks"] == 1
    assert c.post("/rollback", {}, headers={"Authorization": "Bearer nope"}).status == 401
    assert c.post("/rollback", {}, headers={"X-API-Key": "k1"}).status == 409  # the key was read; one version: nothing to roll back to
    r = c.request("OPTIONS", "/search", headers={"Origin": "http://a.example", "Access-Control-Request-Method": "POST"})
    assert r.headers.get("access-control-allow-origin") == "http://a.example"
    c.close()


def test_serve_without_the_extra_names_it(workspace: Ragtune):
    code = (
        "import sys; sys.modules['fastapi'] = None\n"  # as if FastAPI were not installed
        "from ragtune.cli import main\n"
        f"main(['-w', {str(workspace.ws.root)!r}, 'serve'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert res.returncode == 1
    assert "pip install 'ragtune[serve]'" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_help_lists_serve_without_importing_the_server():
    code = "import sys; from ragtune.cli import main\ntry:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'ragtune')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert "--cors-origin" in res.stdout and "RAGTUNE_API_KEY" in res.stdout
    loaded = json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert not [m for m in loaded if m.startswith(("fastapi", "uvicorn", "ragtune.server"))]
