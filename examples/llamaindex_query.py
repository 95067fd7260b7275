"""A LlamaIndex query engine whose users' clicks become training data for the retriever.

The query engine retrieves with :class:`~ragtune.integrations.llamaindex.RagtuneRetriever` (a
llama-index ``BaseRetriever``) and answers with llama-index's ``MockLLM`` here (plug in any LLM:
``RetrieverQueryEngine.from_args(retriever, llm=your_llm)``). When a user marks the source that
answered them, one line records it (``retriever.record_click(node)``). The clicks are mined into
training pairs, and a refresh fine-tunes, gates and (if it helps) swaps in a new model, which the
same retriever object then uses without being rebuilt. :class:`RagtuneEmbedding` gives llama-index
the workspace's current embedder for its own indexes.

Nothing here needs the network (llama-index's NLTK and tiktoken files ship with it).

Run: ``python examples/llamaindex_query.py [--model default|PATH] [--workspace DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from ragtune import Ragtune, RagtuneConfig
from ragtune.integrations.llamaindex import RagtuneEmbedding, RagtuneRetriever

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default", help="'default' or a sentence-transformers model path")
    parser.add_argument("--workspace", type=Path, default=None, help="workspace directory (default: a temporary one)")
    args = parser.parse_args(argv)
    tmp = None if args.workspace else tempfile.mkdtemp(prefix="ragtune-example-")
    try:
        small = {"model.name": args.model, "mining.heldout_fraction": 0.25, "gate.min_queries": 2, "train.epochs": 1}
        ws = args.workspace or Path(tmp) / "ws"  # type: ignore[arg-type]
        rt = Ragtune.init(ws, RagtuneConfig().with_overrides(small), progress=False)
        rt.index([DOCS])

        retriever = RagtuneRetriever(rt, similarity_top_k=3)
        engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))

        response = engine.query(USERS[0][0])
        print(f"Question: {USERS[0][0]}")
        for n in response.source_nodes:
            print(f"  [{n.node.metadata['rank']}] {n.node.node_id} ({n.score:.3f}): {n.node.get_content()[:60]!r}")
        print(f"  query id {response.source_nodes[0].node.metadata['ragtune_query_id']}\n")

        for question, source in USERS:
            nodes = engine.query(question).source_nodes
            helpful = next((n for n in nodes if n.node.node_id.startswith(source)), None)
            if helpful is not None:  # the user clicked the source that answered them
                retriever.record_click(helpful)
            print(f"{question!r}: shown {[n.node.node_id for n in nodes]}, clicked {helpful.node.node_id if helpful else None}")
        print(f"\nfeedback log: {rt.feedback.stats()}")

        # the workspace's embedder, for llama-index's own indexes (here: notes that are not in the workspace)
        embed = RagtuneEmbedding(workspace=rt)
        notes = VectorStoreIndex.from_documents(
            [Document(text="Call support on 0800 123 456.", id_="support"), Document(text="The warranty lasts two years.", id_="warranty")],
            embed_model=embed,
        )
        top = notes.as_retriever(similarity_top_k=1).retrieve("The warranty lasts two years.")[0]
        print(f"RagtuneEmbedding: {len(embed.get_query_embedding('warranty'))} dims; own index top hit {top.node.ref_doc_id}")

        mined = rt.mine()
        print(f"\nmined: {mined.report()}")
        for ex in mined.train[:3]:
            print(f"  pair: {ex.query!r} -> {ex.positive_id} (negatives {ex.negative_ids})")

        result = rt.refresh(force=True)
        print(f"\nrefresh: {result['status']} - {result.get('reason', '')}")
        nodes = retriever.retrieve("how do I restore factory settings?")
        print(f"the same retriever now serves {nodes[0].node.metadata['ragtune_version']}: top hit {nodes[0].node.node_id}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
