"""Adapters for other libraries (installed as ``ragtune.integrations``): LangChain, chromadb."""
