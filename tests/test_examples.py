"""The examples run end to end (as subprocesses, with the tiny model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, tiny_model: str, *args: str) -> str:
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--model", tiny_model, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_python_api_example(tiny_model: str, tmp_path: Path) -> None:
    out = _run("python_api.py", tiny_model, "--workspace", str(tmp_path / "ws"))
    assert "indexed 5 chunks" in out and "query id" in out and "clicked" in out
    assert "'clicks': 1" in out
    # a given workspace is kept
    assert (tmp_path / "ws" / "config.json").is_file()
    assert (tmp_path / "ws" / "versions" / "v0001" / "manifest.json").is_file()


def test_chroma_workspace_example(tiny_model: str) -> None:
    out = _run("chroma_workspace.py", tiny_model)
    assert "indexed 5 chunks into chroma" in out
    assert "re-indexed: 1 added, 1 changed, 4 unchanged" in out
    assert "now serving v0002 (chroma)" in out


def test_langchain_chain_example(tiny_model: str) -> None:
    out = _run("langchain_chain.py", tiny_model)
    assert "Question: how do I restore factory settings?" in out
    assert "mined: {" in out and "pair: " in out
    assert "refresh: " in out and "the same retriever now serves v000" in out
    assert "{'loss'" not in out and "'train_runtime'" not in out  # the trainer's dicts go to logging, not stdout


def test_llamaindex_query_example(tiny_model: str) -> None:
    out = _run("llamaindex_query.py", tiny_model)
    assert "Question: how do I restore factory settings?" in out and "  [1] " in out and "query id " in out
    assert "feedback log: {'queries': 13, 'impressions': 39, " in out and "'clicks': 0" not in out
    assert "RagtuneEmbedding: 32 dims; own index top hit warranty" in out
    assert "mined: {" in out and "refresh: " in out and "the same retriever now serves v000" in out


def test_demo_runs_the_whole_loop(tiny_model: str, tmp_path: Path) -> None:
    out = _run("demo.py", tiny_model, "--workspace", str(tmp_path / "ws"), "--rounds", "2", "--mode", "query")
    for step in ("1. index scifact-mini", "455 docs embedded", "3. before: test nDCG@10", "4.1 simulated users", "[query] offline check:", "refresh --mode query: trial_started", "5.2 refresh settles trial", "6. after:", "7. versions", "9. rollback -> v0001"):
        assert step in out, step


@pytest.mark.parametrize("script", ["python_api.py", "chroma_workspace.py", "langchain_chain.py", "llamaindex_query.py", "demo.py"])
def test_examples_have_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--model" in proc.stdout and "--workspace" in proc.stdout
