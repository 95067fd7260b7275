"""The public surface is pinned, and `ragtune --help` imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import ragtune


def test_all_is_pinned():
    assert sorted(ragtune.__all__) == sorted(
        [
            "Ragtune",
            "Hit",
            "SearchResults",
            "RagtuneConfig",
            "RagtuneError",
            "ConfigError",
            "FeedbackError",
            "InputError",
            "MissingDependencyError",
            "ModelError",
            "NotEnoughFeedbackError",
            "RefreshLockedError",
            "WorkspaceError",
            "__version__",
        ]
    )
    for name in ragtune.__all__:
        assert hasattr(ragtune, name)


def test_errors_are_builtins_too():
    assert issubclass(ragtune.ConfigError, ValueError) and issubclass(ragtune.ConfigError, ragtune.RagtuneError)
    assert issubclass(ragtune.WorkspaceError, FileNotFoundError)
    assert issubclass(ragtune.InputError, ValueError)
    assert issubclass(ragtune.RefreshLockedError, RuntimeError)
    assert issubclass(ragtune.MissingDependencyError, ImportError)


def test_cli_help_is_light():
    code = "import sys; from ragtune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'sentence_transformers', 'faiss', 'chromadb', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_checkout_cli_shim():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "cli.py"), "--help"], capture_output=True, text=True, check=True, cwd=root).stdout
    assert "refresh" in out and "index" in out
