"""A LangChain retrieval chain whose users' clicks become training data for the retriever.

The chain retrieves with :class:`~ragtune.integrations.langchain.RagtuneRetriever` and formats a
prompt (plug any LLM in after it: ``chain | llm``; none is needed here). When a user marks the
source that answered them, one line records it (``retriever.record_click(doc)``). The clicks are
mined into training pairs, and a refresh fine-tunes, gates and (if it helps) swaps in a new model,
which the same retriever object then uses without being rebuilt.

Run: ``python examples/langchain_chain.py [--model default|PATH] [--workspace DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from ragtune import Ragtune, RagtuneConfig
from ragtune.integrations.langchain import RagtuneRetriever

DOCS = Path(__file__).parent / "docs"
# (question, the file that actually answers it): stands in for real users marking a helpful source
USERS = [
    ("how do I restore factory settings?", "reset"),
    ("the router forgot my settings after I held the button", "reset"),
    ("what does the paper clip hole on the back do", "reset"),
    ("how do I change the wifi password", "wifi"),
    ("where is the wireless network name", "wifi"),
    ("when does the router update itself", "firmware"),
    ("is the firmware updated automatically", "firmware"),
    ("block the internet for my kids at bedtime", "parental-controls"),
    ("pause internet access for a child's device", "parental-controls"),
    ("first time setup of the router", "getting-started"),
    ("how do I connect the router for the first time", "getting-started"),
    ("what do I plug in to set it up", "getting-started"),
]


def format_prompt(inputs: dict[str, Any]) -> dict[str, Any]:
    context = "\n\n".join(f"[{d.metadata['rank']}] ({d.metadata['doc_id']}) {d.page_content}" for d in inputs["docs"])
    prompt = f"Answer from the sources below.\n\n{context}\n\nQuestion: {inputs['question']}\nAnswer:"
    return {"prompt": prompt, "docs": inputs["docs"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default", help="'default' or a sentence-transformers model path")
    parser.add_argument("--workspace", type=Path, default=None, help="workspace directory (default: a temporary one)")
    args = parser.parse_args(argv)
    tmp = None if args.workspace else tempfile.mkdtemp(prefix="ragtune-example-")
    try:
        small = {"model.name": args.model, "mining.heldout_fraction": 0.25, "gate.min_queries": 2, "train.epochs": 1}
        ws = args.workspace or Path(tmp) / "ws"  # type: ignore[arg-type]
        Ragtune.init(ws, RagtuneConfig().with_overrides(small), progress=False).index([DOCS])

        retriever = RagtuneRetriever(workspace=ws, k=3)
        chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()) | RunnableLambda(format_prompt)

        out = chain.invoke(USERS[0][0])
        print(out["prompt"], "\n")

        for question, source in USERS:
            docs = chain.invoke(question)["docs"]
            helpful = next((d for d in docs if d.metadata["doc_id"].startswith(source)), None)
            if helpful is not None:  # the user clicked the source that answered them
                retriever.record_click(helpful)
            print(f"{question!r}: shown {[d.metadata['doc_id'] for d in docs]}, clicked {helpful.metadata['doc_id'] if helpful else None}")

        rt = Ragtune(ws, progress=False)
        mined = rt.mine()
        print(f"\nmined: {mined.report()}")
        for ex in mined.train[:3]:
            print(f"  pair: {ex.query!r} -> {ex.positive_id} (negatives {ex.negative_ids})")

        result = rt.refresh(force=True)
        print(f"\nrefresh: {result['status']} - {result.get('reason', '')}")
        docs = retriever.invoke("how do I restore factory settings?")
        print(f"the same retriever now serves {docs[0].metadata['ragtune_version']}: top hit {docs[0].metadata['doc_id']}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
