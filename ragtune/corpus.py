"""Corpus loaders and chunking.

Three sources are understood:

* a directory of ``.txt`` / ``.md`` files, cut into overlapping token windows (ids ``relpath#chunk``);
* a JSONL file of ``{"id", "text", "title"?, "metadata"?}`` objects (``_id`` is accepted for ``id``);
* a BEIR folder (``corpus.jsonl`` with ``_id``, ``title``, ``text``).

Every error names the file (and line) at fault. Loading never touches an index: callers load and
validate everything first, then write. Each document records the *source* it came from: the resolved
absolute path of the source argument (the directory, the ``.jsonl`` file or the BEIR folder), so that
re-indexing one source leaves the documents of the others alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["Document", "chunk_text", "is_beir_dir", "load_beir_corpus", "load_jsonl", "load_sources", "load_text_dir", "source_key", "source_list"]

TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    """One unit of retrieval.

    Attributes:
        id: Stable identifier.
        text: Body text.
        title: Optional title (embedded as ``title + " " + text``, as BEIR does).
        metadata: Free-form JSON-able metadata.
        source: The source it was loaded from (:func:`source_key` of the source argument); ``""``
            for documents indexed before sources were tracked.
    """

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def embed_text(self) -> str:
        """The text that is embedded."""
        return f"{self.title} {self.text}" if self.title else self.text

    @property
    def content_hash(self) -> str:
        """A hash of what is embedded: unchanged hash, unchanged vector."""
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()[:32]


Tokenize = Callable[[str], list[tuple[int, int]]]


def chunk_text(text: str, offsets: list[tuple[int, int]], chunk_tokens: int, overlap_tokens: int) -> list[str]:
    """Cut ``text`` into windows of ``chunk_tokens`` tokens sharing ``overlap_tokens``.

    Args:
        text: The original text.
        offsets: Character offsets ``(start, end)`` of each token in ``text``.
        chunk_tokens: Window length in tokens.
        overlap_tokens: Tokens shared by consecutive windows.

    Returns:
        The chunks, as slices of the original text (whitespace and casing are kept).
    """
    if not offsets:
        return [text.strip()] if text.strip() else []
    step = chunk_tokens - overlap_tokens
    chunks = []
    start = 0
    while True:
        window = offsets[start : start + chunk_tokens]
        chunks.append(text[window[0][0] : window[-1][1]].strip())
        if start + chunk_tokens >= len(offsets):
            break
        start += step
    return [c for c in chunks if c]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 or remove it") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from exc


def _no_text_files(root: Path) -> InputError:
    others = sorted({p.suffix.lower() or p.name for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)})
    found = f"it holds only {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} files" if others else "it holds no files"
    looked = ", ".join(f"*{s}" for s in TEXT_SUFFIXES)
    return InputError(
        f"{root}: no text files to index (looked for {looked} recursively, skipping hidden ones; {found}); "
        "pass a directory of .txt/.md files, a .jsonl file or a BEIR folder (with corpus.jsonl)"
    )


def load_text_dir(root: Path, tokenize: Tokenize, chunk_tokens: int, overlap_tokens: int, *, source: str = "") -> Iterator[Document]:
    """Yield chunked documents from every .txt/.md file under ``root`` (sorted, recursive), recording ``source``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise _no_text_files(root)
    empty = 0
    for path in files:
        text = _read_utf8(path)
        if not text.strip():  # nothing to find in it: skipped, so one empty file does not block a folder
            logger.warning("skipped %s: empty file", path)
            empty += 1
            continue
        rel = path.relative_to(root).as_posix()
        title = path.stem
        for i, chunk in enumerate(chunk_text(text, tokenize(text), chunk_tokens, overlap_tokens)):
            yield Document(id=f"{rel}#{i}", text=chunk, title="", metadata={"source": rel, "chunk": i, "title": title}, source=source)
    if empty == len(files):
        raise InputError(f"{root}: every text file in it is empty ({empty}); add text to them, or pass another source")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from exc
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                body = line.rstrip("\r\n")
                try:
                    obj = json.loads(body)
                except json.JSONDecodeError as exc:
                    # parsed one line at a time: the offset is the column (colno restarts after a newline inside the text)
                    at = "end of line" if exc.pos >= len(body.rstrip()) else f"column {exc.pos + 1}"
                    raise InputError(f"{path}:{lineno}: malformed JSON ({exc.msg} at {at}); fix that line or remove it") from exc
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{lineno + 1}: not UTF-8 text ({exc.reason})") from exc


def load_jsonl(path: Path, *, id_keys: tuple[str, ...] = ("id", "_id"), source: str = "") -> Iterator[Document]:
    """Yield documents from a JSONL file, recording ``source``; errors name ``file:line``."""
    lines: dict[str, int] = {}
    for lineno, obj in _iter_jsonl(path):
        doc_id = next((obj[k] for k in id_keys if k in obj), None)
        if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
            raise InputError(f"{path}:{lineno}: missing document id (expected one of {list(id_keys)})")
        if not isinstance(doc_id, (str, int)):
            raise InputError(f"{path}:{lineno}: document id must be a string, got {doc_id!r}")
        text = obj.get("text")
        title = obj.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise InputError(f"{path}:{lineno}: 'text' (and 'title') must be strings, got text={text!r}")
        if not text.strip() and not title.strip():
            raise InputError(f"{path}:{lineno}: document {doc_id!r} has empty text")
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InputError(f"{path}:{lineno}: 'metadata' must be an object, got {metadata!r}")
        doc_id = str(doc_id)
        if doc_id in lines:
            raise InputError(f"{path}:{lineno}: duplicate document id {doc_id!r} (first on line {lines[doc_id]})")
        lines[doc_id] = lineno
        yield Document(id=doc_id, text=text, title=title, metadata=metadata, source=source)


def is_beir_dir(path: Path) -> bool:
    """A BEIR folder holds ``corpus.jsonl``."""
    return path.is_dir() and (path / "corpus.jsonl").is_file()


def _beir_parts(path: Path) -> list[str]:
    """What of a BEIR folder ``path`` holds besides ``corpus.jsonl`` (``queries.jsonl``, ``qrels/``)."""
    return [name for name, ok in (("queries.jsonl", (path / "queries.jsonl").is_file()), ("qrels/", (path / "qrels").is_dir())) if ok]


def load_beir_corpus(root: Path, *, source: str = "") -> Iterator[Document]:
    """Yield the documents of a BEIR folder's ``corpus.jsonl``, recording ``source``."""
    yield from load_jsonl(root / "corpus.jsonl", id_keys=("_id", "id"), source=source)


def source_key(src: str | Path) -> str:
    """The name a source is tracked by: its resolved absolute path (``~`` expanded)."""
    return str(Path(src).expanduser().resolve())


def nested_source(given: Iterable[str], indexed: Iterable[str]) -> tuple[str, str] | None:
    """A pair ``(source, other)`` of distinct folders of text files (keys, :func:`source_key`) where one holds the other, else ``None``.

    ``given`` are the sources being indexed, ``indexed`` those already in the index. Indexing both
    a folder and a folder inside it would hold each text file inside twice, under two ids. (A JSONL
    file or a BEIR folder inside a folder of text files is not read by it.)
    """

    def text_dir(key: str) -> bool:
        return Path(key).is_dir() and not is_beir_dir(Path(key))

    given = [g for g in given if text_dir(g)]
    for src in given:
        for other in [*given, *(i for i in indexed if text_dir(i))]:
            if other != src and (Path(other).is_relative_to(src) or Path(src).is_relative_to(other)):
                return src, other
    return None


def source_list(sources: str | Path | Iterable[str | Path], what: str = "sources") -> list[Path]:
    """``sources`` as a list of paths: one ``str``/``Path`` is one source (never its characters).

    Raises:
        InputError: ``sources`` is neither a path nor an iterable of paths.
    """
    if isinstance(sources, (str, Path)):
        return [Path(sources)]
    try:
        items = list(sources)
    except TypeError:
        raise InputError(f"{what} must be a path or a list of paths, got {sources!r}") from None
    bad = [s for s in items if not isinstance(s, (str, Path))]
    if bad:
        raise InputError(f"{what} must be paths (str or pathlib.Path), got {bad[0]!r}")
    return [Path(s) for s in items]


def load_sources(sources: str | Path | Iterable[str | Path], tokenize: Tokenize | None, chunk_tokens: int = 200, overlap_tokens: int = 40) -> list[Document]:
    """Load and validate every source; duplicate ids across or within sources are an error.

    Args:
        sources: Paths to directories of text files, JSONL files or BEIR folders (one path is one
            source). A source given twice is read once.
        tokenize: Returns token character offsets of a text (needed for text directories only).
        chunk_tokens: Chunk length for text directories.
        overlap_tokens: Chunk overlap for text directories.

    Returns:
        All documents, in source order, each with its ``source`` set.
    """
    docs: list[Document] = []
    seen: dict[str, str] = {}
    paths = source_list(sources)
    if not paths:
        raise InputError("no source given; pass a directory of .txt/.md files, a .jsonl file or a BEIR folder")
    keys: set[str] = set()
    for src in paths:
        path = src.expanduser()
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        key = source_key(path)
        if key in keys:
            continue
        keys.add(key)
        if is_beir_dir(path):
            it: Iterable[Document] = load_beir_corpus(path, source=key)
            where = str(path / "corpus.jsonl")
        elif path.is_dir() and _beir_parts(path):
            raise InputError(
                f"{path}: looks like a BEIR folder (it has {' and '.join(_beir_parts(path))}) but has no corpus.jsonl; "
                "add its corpus.jsonl, or pass a directory of .txt/.md files or a .jsonl file"
            )
        elif path.is_dir():
            if tokenize is None:  # pragma: no cover - the facade always passes one
                raise InputError("a tokenizer is needed to chunk text directories")
            it = load_text_dir(path, tokenize, chunk_tokens, overlap_tokens, source=key)
            where = str(path)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            it = load_jsonl(path, source=key)
            where = str(path)
        elif path.suffix.lower() in TEXT_SUFFIXES:
            raise InputError(f"{path}: pass the directory that holds text files, not a single file")
        else:
            raise InputError(f"{path}: unsupported source; expected a directory of .txt/.md files, a .jsonl file or a BEIR folder")
        for doc in it:
            if doc.id in seen:
                raise InputError(
                    f"{where}: duplicate document id {doc.id!r}: {seen[doc.id]} has it too; ids must be unique across sources: rename one"
                )
            seen[doc.id] = where
            docs.append(doc)
    if not docs:
        raise InputError(f"no documents found in {', '.join(map(str, paths))}")
    return docs
