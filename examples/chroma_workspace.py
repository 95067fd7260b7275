"""A workspace whose vectors live in chromadb (one collection per index version).

Index, search, click, then re-index after a document changed: ragtune writes a new collection and
swaps to it atomically, and the old version stays searchable for rollback.

Run: ``python examples/chroma_workspace.py [--model default|PATH] [--workspace DIR]
[--host HOST --port PORT]`` — with ``--host`` it uses a running Chroma server
(``chroma run --path DIR``), otherwise a persistent Chroma store inside the workspace.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragtune import Ragtune, RagtuneConfig

DOCS = Path(__file__).parent / "docs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default", help="'default' or a sentence-transformers model path")
    parser.add_argument("--workspace", type=Path, default=None, help="workspace directory (default: a temporary one)")
    parser.add_argument("--host", default=None, help="Chroma server host (default: no server, files in the workspace)")
    parser.add_argument("--port", type=int, default=8000, help="Chroma server port")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="ragtune-example-")
    try:
        overrides = {"model.name": args.model, "index.backend": "chroma"}
        if args.host:
            overrides.update({"index.chroma_url": f"http://{args.host}:{args.port}"})
        rt = Ragtune.init(args.workspace or Path(tmp) / "ws", RagtuneConfig().with_overrides(overrides), progress=False)

        report = rt.index([DOCS])
        print(f"indexed {report['n_docs']} chunks into chroma -> version {report['version']}")
        hits = rt.search("change the wifi password", k=3)
        for h in hits:
            print(f"  {h.rank}. {h.score:.3f}  {h.doc_id}")
        assert hits.query_id is not None
        rt.click(hits.query_id, hits[0].doc_id)

        # a document changes and one is added (in a copy of the folder, which replaces the original as the
        # source): re-index embeds just those, writes a new collection, swaps
        docs = Path(tmp) / "docs"
        shutil.copytree(DOCS, docs, dirs_exist_ok=True)
        (docs / "wifi.md").write_text("# Wi-Fi\n\nThe Wi-Fi password is on the label; change it in the app under Wireless.\n")
        (docs / "guest.md").write_text("# Guest network\n\nTurn on the guest network to keep visitors off your own devices.\n")
        report = rt.index([docs], replace=True)
        print(f"re-indexed: {report['added']} added, {report['changed']} changed, {report['unchanged']} unchanged -> version {report['version']}")
        hits = rt.search("wifi for visitors", k=2)
        print(f"now serving {hits.version} ({rt.serving().store.backend}): top hit {hits[0].doc_id}")
        print("versions:", ", ".join(v["name"] for v in rt.versions()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
