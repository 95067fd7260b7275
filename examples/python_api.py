"""The plain Python API: index a folder of Markdown files, search, record a click.

Run: ``python examples/python_api.py [--model default|PATH] [--workspace DIR]``
(without ``--workspace`` a temporary workspace is used and removed afterwards).
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
    args = parser.parse_args(argv)
    tmp = None if args.workspace else tempfile.mkdtemp(prefix="ragtune-example-")
    try:
        config = RagtuneConfig().with_overrides({"model.name": args.model})
        rt = Ragtune.init(args.workspace or Path(tmp) / "ws", config, progress=False)  # type: ignore[arg-type]

        report = rt.index([DOCS])
        print(f"indexed {report['n_docs']} chunks from {DOCS.name}/ -> version {report['version']}")

        hits = rt.search("how do I reset the router to factory settings?", k=3)
        print(f"query id {hits.query_id}")
        for h in hits:
            print(f"  {h.rank}. {h.score:.3f}  {h.doc_id}  {h.text[:60]!r}")

        # the user opened the second result: that is a training signal for the next refresh
        assert hits.query_id is not None  # set because the search was logged
        rt.click(hits.query_id, hits[1].doc_id)
        print(f"clicked {hits[1].doc_id}")
        print(f"feedback so far: {rt.status()['feedback']}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
