"""The ``ragtune`` command line: click commands that parse, make one facade call, and print.

Errors from the library (:class:`ragtune.errors.RagtuneError`) become clean ``click.ClickException``
messages in one place (:class:`_Group`); heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragtune.errors import RagtuneError

if TYPE_CHECKING:
    from ragtune.api import Ragtune
    from ragtune.indexing import IndexReport
    from ragtune.refresh import RefreshReport
    from ragtune.workspace import Workspace

__all__ = ["main"]


#: OS errors that mean "this cannot be written here" (a read-only workspace, a full disk): a one-line error, not a traceback.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


#: The options that belong to `ragtune` itself, before any command.
_GLOBAL_OPTIONS = ("-w", "--workspace", "-q", "--quiet", "-v", "--verbose")
#: Commands that live in a group, by the name a user may type at the top level.
_SUBCOMMAND_HOMES = {"click": "feedback", "rate": "feedback", "mine": "feedback", "export": "feedback", "import": "feedback", "stats": "feedback", "decide": "trial", "stop": "trial"}


class _Group(click.Group):
    """Turns RagtuneErrors (in their CLI wording) and unwritable-file OS errors into one-line click errors (exit 1).

    Never a traceback for a user mistake or a read-only workspace.
    """

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            sub = _SUBCOMMAND_HOMES.get(args[0]) if args and self.name == "main" else None
            if sub is None:
                raise
            raise click.UsageError(f"No such command {args[0]!r}; it is `ragtune {sub} {args[0]}`", ctx) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name not in _GLOBAL_OPTIONS:
                raise
            # `ragtune status -w DIR`: a global option after the command
            hint = f"{exc.message.rstrip('.')}; {exc.option_name} is a global option: put it before the command (`ragtune {exc.option_name} ... COMMAND`)"
            raise click.UsageError(hint, exc.ctx) from exc
        except RagtuneError as exc:
            raise click.ClickException(exc.cli_message()) from exc
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make the workspace writable by this user (or use another --workspace)"
            raise click.ClickException(f"cannot write{where}: {exc.strerror or exc}; {fix}") from exc
        except KeyboardInterrupt:  # pragma: no cover - interactive; checked by hand (kill -INT), exit 130 as shells expect
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(130) from None


class _CliWording(logging.Filter):
    """Prints a library warning in its command-line wording when it carries one (``extra={"ragtune_cli": ...}``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        cli = getattr(record, "ragtune_cli", None)
        if isinstance(cli, str):
            record.msg, record.args = cli, ()
        return True


def _quiet_libraries(quiet: bool) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), envvar="RAGTUNE_WORKSPACE", default=Path(".ragtune"), show_default=True, help="Workspace directory (env RAGTUNE_WORKSPACE).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Log what happens.")
@click.version_option(package_name="ragtune")
@click.pass_context
def main(ctx: click.Context, workspace: Path, quiet: bool, verbose: bool) -> None:
    """ragtune: a retriever that learns from its users.

    index a corpus, search it, log what users click, and refresh the embedder from that feedback.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _CliWording) for f in handler.filters):
            handler.addFilter(_CliWording())
    _quiet_libraries(quiet)
    ctx.obj = {"workspace": workspace, "quiet": quiet}


def _open(ctx: click.Context, *, create: bool = False) -> Ragtune:
    from ragtune.api import Ragtune

    return Ragtune(ctx.obj["workspace"], create=create, progress=not ctx.obj["quiet"])


def _engine_options(fn: Any) -> Any:
    """``--engine`` / ``--ray-address``: where this run embeds the corpus (``model.engine``), for this run only."""
    fn = click.option(
        "--ray-address", default=None, metavar="ADDRESS",
        help="The Ray cluster (ray://HOST:10001 or HOST:6379); implies --engine ray (default: the address model.engine names, else $RAY_ADDRESS, else a local Ray instance).",
    )(fn)  # fmt: skip
    return click.option("--engine", type=click.Choice(["local", "ray"]), default=None, help="Embed the corpus here or on a Ray cluster (default: model.engine, local).")(fn)


def _use_engine(rt: Ragtune, engine: str | None, ray_address: str | None) -> None:
    from ragtune.errors import ConfigError

    if ray_address is not None and engine == "local":
        raise click.UsageError("--ray-address is for --engine ray; drop one of them")
    if ray_address is not None:
        try:
            rt.config = rt.config.with_overrides({"model.engine": ray_address})
        except ConfigError:
            raise click.BadParameter(
                f"expected a Ray cluster address such as ray://HOST:10001 or HOST:6379, got {ray_address!r} "
                "(for Ray's 'auto', set RAY_ADDRESS=auto and pass --engine ray)",
                param_hint="--ray-address",
            ) from None
    elif engine == "local" or (engine == "ray" and not rt.config.model.uses_ray()):
        rt.config = rt.config.with_overrides({"model.engine": engine})


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


# -- init / index / query / eval / status ---------------------------------------------------------
@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--model", default=None, help="'default' (bundled all-MiniLM-L6-v2), a local sentence-transformers dir, or a hub name.")
@click.option("--query-prefix", default=None, help="Prefix for queries (e.g. a BGE instruction).")
@click.option("--document-prefix", default=None, help="Prefix for documents.")
@click.option("--backend", type=click.Choice(["faiss", "chroma"]), default=None, help="Vector index backend.")
@click.option("--index-kind", type=click.Choice(["auto", "flat", "hnsw", "ivf"]), default=None, help="faiss index type (auto: exact below 50,000 docs, HNSW from there).")
@click.option("--reindex", is_flag=True, help="On an indexed workspace: apply new model settings by re-embedding every document (a new version).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def init(
    ctx: click.Context, path: Path | None, model: str | None, query_prefix: str | None, document_prefix: str | None,
    backend: str | None, index_kind: str | None, reindex: bool, as_json: bool,
) -> None:  # fmt: skip
    """Create a workspace at PATH (default: --workspace), or change an existing one's settings.

    Changing the model of a workspace that has an index needs --reindex (every document is
    re-embedded with the new model as a new version); without it the change is refused.
    """
    from ragtune.config import RagtuneConfig
    from ragtune.embedder import ModelSpec
    from ragtune.errors import WorkspaceError
    from ragtune.indexing import model_changes
    from ragtune.workspace import Workspace

    if model is not None and model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        raise click.BadParameter(f"{model!r} looks like a path, but there is no such directory; give a local sentence-transformers directory, a hub name or 'default'", param_hint="--model")
    root = path or ctx.obj["workspace"]
    ws = Workspace(root)
    existed = ws.exists()
    config = ws.load_config() if existed else RagtuneConfig()
    current = None
    if existed or ws.current_path.is_file():  # a workspace with versions (its config.json may be lost)
        try:
            current = ws.current_version()
        except RagtuneError:  # a corrupt CURRENT: the version the log last made current
            current = ws.last_good_version()
    restored = None  # config.json lost from a workspace that has versions: theirs, not the defaults (the model among them)
    if not existed and current is not None:
        restored = ws.version_dir(current) / "config.json"
        try:
            config = RagtuneConfig.load(restored)
        except RagtuneError as exc:
            raise WorkspaceError(
                f"workspace {ws.root} lost its config.json, and its serving version's copy cannot be read ({exc}); "
                "copy another version's versions/vNNNN/config.json to config.json, then run `ragtune doctor`"
            ) from None
    model_opts = {"model.name": model, "model.query_prefix": query_prefix, "model.document_prefix": document_prefix}
    overrides = {k: v for k, v in {**model_opts, "index.backend": backend, "index.kind": index_kind}.items() if v is not None}
    config = config.with_overrides(overrides)
    changes = model_changes(config, ModelSpec.from_dict(ws.read_version(current).model)) if current else []
    if changes and not reindex and any(v is not None for v in model_opts.values()):
        what = ", ".join(f"{c.key} {c.serving!r} -> {c.configured!r}" for c in changes)
        raise WorkspaceError(
            f"workspace {ws.root} is indexed with other model settings (version {current}); {what} would not change its vectors: "
            f"add --reindex to re-embed every document with the new settings (a new version), or use a new workspace "
            f"(`ragtune -w NEW_DIR init ...`); nothing was changed"
        )
    saved = ws.config_path.read_bytes() if existed else None
    Workspace.create(root, config)
    report = None
    if reindex and current is not None:
        from ragtune.api import Ragtune

        try:
            report = Ragtune(root, progress=not ctx.obj["quiet"]).reindex()
        except BaseException:  # a model that does not load: the workspace stays as it was
            if saved is not None:
                ws.config_path.write_bytes(saved)
            raise
    if as_json:
        _echo_json({
            "workspace": str(ws.root), "created": not existed and restored is None, "restored_from": str(restored) if restored else None, "model": config.model.name, "query_prefix": config.model.query_prefix,
            "document_prefix": config.model.document_prefix, "backend": config.index.backend, "index_kind": config.index.kind,
            "reindex": report.to_dict() if report is not None else None,
        })  # fmt: skip
        return
    if restored is not None:
        click.echo(f"config.json was missing: restored from {restored.relative_to(ws.root)} (the serving version's settings)")
    unchanged = existed and restored is None and report is None and saved == ws.config_path.read_bytes()
    verb = "created" if not existed and restored is None else ("workspace unchanged:" if unchanged else "updated")
    click.echo(f"{verb}{'' if unchanged else ' workspace'} {ws.root} (model {config.model.name}, {config.index.backend}/{config.index.kind})")
    if report is not None:
        _print_index(report)
    elif changes:
        click.echo(f"note: the index ({current}) was made with other model settings; `ragtune index --reindex` applies config.json's")
    if current is not None and report is None and (backend is not None or index_kind is not None):
        click.echo(f"note: the index settings apply to the next version an `index` run writes; {current} keeps its own")


def _remove_created(ws: Workspace, before: set[Path] | None) -> None:
    """Remove the workspace files a command created at ``ws.root`` (only the workspace's own entries,
    and only those that were not there ``before``); the folder too when it did not exist (``before`` ``None``) and is left empty."""
    import shutil

    if not ws.root.is_dir():
        return
    for entry in ws.entries():
        if entry in (before or set()) or not os.path.lexists(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if before is None:
        with contextlib.suppress(OSError):
            ws.root.rmdir()  # only when empty


def _print_index(report: IndexReport) -> None:
    what = f"{report.embedded} re-embedded with {report.model}" if report.reindexed else f"{report.embedded} embedded"
    click.echo(
        f"{report.version}: {report.n_docs} docs ({report.added} added, {report.changed} changed, "
        f"{report.unchanged} unchanged, {report.removed} removed; {what} in {report.seconds:.1f}s)"
        + ("" if report.written else "; nothing changed, no new version")
    )
    for s in report.sources:
        if s.status in ("new", "updated", "removed", "adopted") or (s.status == "unchanged" and report.written):
            counts = f"{s.n_docs} docs" + (f": {s.added} added, {s.changed} changed, {s.removed} removed" if s.status == "updated" else "")
            click.echo(f"  {s.status:<9} {s.source or '(indexed before sources were tracked)'}  {counts if s.status != 'removed' else f'{s.removed} docs'}")


@main.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Make the index hold exactly SOURCES (other sources' documents are dropped).")
@click.option("--reindex", is_flag=True, help="Apply a model changed in config.json: re-embed every document with it (SOURCES optional; nothing to do when the model is unchanged).")
@click.option("--remove", "remove", multiple=True, type=click.Path(path_type=Path), help="Drop an indexed source's documents (it need not exist any more); repeatable.")
@_engine_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.pass_context
def index(
    ctx: click.Context, sources: tuple[Path, ...], replace: bool, reindex: bool, remove: tuple[Path, ...], engine: str | None, ray_address: str | None, as_json: bool
) -> None:
    """Index SOURCES (dirs of .txt/.md, .jsonl files, BEIR folders); only changed docs are embedded.

    Incremental per source: each given source's documents are added, changed or removed; documents
    of sources not given stay (use --replace to drop them).
    """
    if not sources and not reindex and not remove:
        raise click.UsageError("give SOURCES to index (dirs of .txt/.md, .jsonl files, BEIR folders), --remove SOURCE, or --reindex")
    if replace and not sources:
        raise click.UsageError("--replace needs SOURCES: the index is made to hold exactly them")
    from ragtune.errors import RefreshLockedError
    from ragtune.workspace import Workspace, default_workspace_path

    target = Workspace(ctx.obj["workspace"] if ctx.obj["workspace"] is not None else default_workspace_path())
    made = None if target.exists() else (set(target.root.iterdir()) if target.root.is_dir() else None, target.root)  # what was there before
    theirs = {p for p in made[0] if not p.name.startswith(".")} if made is not None and made[0] else set()  # .DS_Store and the like do not count
    if theirs and ((target.root / "CURRENT").exists() or (target.root / "versions").is_dir()):  # a workspace without its config.json
        raise click.ClickException(f"{target.root} is a ragtune workspace that lost its config.json; `ragtune init {target.root}` restores it, then index again")
    if theirs:  # `-w docs/ index x.jsonl`: never turn a folder of the user's files into a workspace unasked
        raise click.ClickException(
            f"{target.root} holds files and is not a ragtune workspace; `ragtune index` makes a workspace only in a new or empty "
            f"folder: pass another --workspace, or `ragtune init {target.root}` to make one there on purpose"
        )
    rt = _open(ctx, create=True)
    try:
        _use_engine(rt, engine, ray_address)
        report = rt.index(list(sources), replace=replace, reindex=reindex, remove=list(remove))
    except RefreshLockedError:
        raise  # another process holds the workspace it is making: its files are its own
    except BaseException:
        if made is not None:  # a workspace this command created: a failed first index leaves nothing behind
            _remove_created(target, made[0])
        raise
    if made is not None and not as_json:
        click.echo(f"created workspace {target.root} with the default settings (`ragtune init` sets others)", err=True)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _print_index(report)


def _text_argument(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str:
    text = " ".join(value)  # `ragtune query chain lube` is the query "chain lube", quoted or not
    if not text.strip():
        raise click.BadParameter(f"must contain something to search for, got {text!r}")
    return text


@main.command()
@click.argument("text", nargs=-1, required=True, callback=_text_argument)
@click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Results to show.")
@click.option("--log/--no-log", default=True, show_default=True, help="Record the query and its impressions in the feedback log.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def query(ctx: click.Context, text: str, k: int, log: bool, as_json: bool) -> None:
    """Search the current index for TEXT (its words, quoted or not)."""
    rt = _open(ctx)
    hits = rt.search(text, k, log=log)  # a broken feedback log never fails it: no query id, and a warning
    failed = rt.feedback.write_error if log and hits.query_id is None else None
    if as_json:
        _echo_json({
            "query_id": hits.query_id, "version": hits.version, "trial": hits.trial, "hits": [h.to_dict() for h in hits],
            "log_error": failed.cli_message() if failed is not None else None,
        })  # fmt: skip
        return
    if hits.query_id:
        click.echo(f"query id: {hits.query_id}   (record a click: ragtune feedback click {hits.query_id} DOC_ID)")
    if hits.trial:  # scores are the serving version's, so they need not fall down an interleaved list
        click.echo(f"trial {hits.trial}: {hits.version}'s ranking interleaved with the trial's (`ragtune trial` for its standing)")
    for h in hits:
        snippet = " ".join(((h.title + ": " + h.text) if h.title else h.text).split())[:110]
        click.echo(f"{h.rank:>3}. {h.score:.3f}  {h.doc_id}  {snippet}")


@main.command(name="eval")
@click.option("--beir", "beir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
@click.option("--split", default="test", show_default=True, help="qrels split.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def eval_(ctx: click.Context, beir: Path, split: str, as_json: bool) -> None:
    """Evaluate retrieval on a BEIR split (indexes the corpus first if the workspace is empty)."""
    rt = _open(ctx, create=True)
    m = rt.evaluate_beir(beir, split)
    if as_json:
        _echo_json(m)
    else:
        click.echo(f"{beir.name} {split}: {m['n_queries']} queries, {m['n_docs']} docs, model {m['model']} ({m['version']})")
        for key in ("ndcg@10", "mrr@10", "recall@10", "recall@100"):
            click.echo(f"  {key:<11}{m[key]:.4f}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the workspace, model, current version, doc count and sizes."""
    s = _open(ctx).status()
    if as_json:
        _echo_json(s)
        return
    click.echo(f"workspace   {s['workspace']}")
    click.echo(f"model       {s['model']}")
    click.echo(f"version     {s['current_version'] or '(nothing indexed yet)'}  ({s['versions']} on disk)")
    built = s.get("index_built")
    kind = s["index_kind"] if not built or built == s["index_kind"] else f"{s['index_kind']}: {built}"
    click.echo(f"documents   {s['n_docs']}  [{s['backend']}/{kind}]")
    for i, src in enumerate(s["sources"]):
        click.echo(f"{'sources' if i == 0 else '':<12}{src['source'] or '(indexed before sources were tracked)'}  {src['n_docs']} docs")
    for c in s["model_changes"]:
        click.echo(f"warning     {c['key']} is {c['configured']!r} in config.json, but the index was made with {c['serving']!r}")
    if s["model_fix"]:
        click.echo(f"            {s['model_fix']}")
    click.echo(f"size        {s['size_bytes'] / 1e6:.1f} MB")
    fb, health = s["feedback"], s["feedback_health"]
    if fb is not None:
        click.echo(f"feedback    {fb['queries']} queries, {fb['clicks']} clicks, {fb['ratings']} ratings")
    if not health["ok"]:
        click.echo(f"{'feedback' if fb is None else '':<12}PROBLEM: {health['message']}; searches are not logged")
        click.echo(f"            fix: {health['fix']}")
    t = s.get("trial")
    state = {"continue": "undecided", "promote": "promoted by the next refresh or `trial decide`", "drop": "dropped by the next refresh or `trial decide`"}
    click.echo(f"trial       {_trial_line(t)}; {state[t['verdict']]} (`ragtune trial` says why)" if t else "trial       none live")
    for problem in s.get("problems") or []:
        click.echo(f"PROBLEM     {problem}")
    if s.get("problems"):
        click.echo("            `ragtune doctor` says more; `ragtune doctor --repair` fixes what it safely can")


# -- feedback -------------------------------------------------------------------------------------
@main.group(cls=_Group)
def feedback() -> None:
    """Record, import, export, count and mine user feedback."""


def _dwell_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise click.BadParameter(f"must be a finite number of seconds >= 0, got {value!r}")
    return value


def _id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter(f"must not be empty, got {value!r}")
    return value


def _feedback_id_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A usage error (exit 2) like the command's other bad values; the library checks the same for Python callers."""
    from ragtune.feedback import MAX_FEEDBACK_ID_CHARS

    if value is not None and not value.strip():
        raise click.BadParameter(f"must not be empty, got {value!r}")
    if value is not None and len(value) > MAX_FEEDBACK_ID_CHARS:
        raise click.BadParameter(f"must be at most {MAX_FEEDBACK_ID_CHARS} characters (e.g. a UUID), got {len(value)}: {value[:40]!r}...")
    return value


_FEEDBACK_ID_HELP = "Your id for this event (e.g. a UUID): recording it again is a no-op (printed as a duplicate), so a retry never counts twice."


def _echo_feedback(as_json: bool, kind: str, label: str, recorded: bool, query_id: str, doc_id: str, feedback_id: str | None, **fields: Any) -> None:
    """What `feedback click` and `feedback rate` print: recorded, or a duplicate of FEEDBACK_ID (nothing added).

    The JSON is POST /feedback's answer: ``status`` ``recorded`` or ``duplicate``, ``recorded``, ``type``, the ids and the event's fields.
    """
    if as_json:
        status = "recorded" if recorded else "duplicate"
        _echo_json({"status": status, "recorded": recorded, "type": kind, "query_id": query_id, "doc_id": doc_id, **fields, "feedback_id": feedback_id})
    elif recorded:
        click.echo(f"{label} recorded: {query_id} -> {doc_id}")
    else:
        click.echo(f"duplicate: feedback id {feedback_id!r} is already recorded ({label} {query_id} -> {doc_id}); nothing added")


@feedback.command(name="click")
@click.argument("query_id", callback=_id_argument)
@click.argument("doc_id", callback=_id_argument)
@click.option("--dwell", type=float, default=None, callback=_dwell_option, help="Seconds spent on the document (a number >= 0).")
@click.option("--feedback-id", default=None, callback=_feedback_id_option, help=_FEEDBACK_ID_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def click_(ctx: click.Context, query_id: str, doc_id: str, dwell: float | None, feedback_id: str | None, as_json: bool) -> None:
    """Record a click on DOC_ID for QUERY_ID."""
    recorded = _open(ctx).click(query_id, doc_id, dwell=dwell, feedback_id=feedback_id)
    _echo_feedback(as_json, "click", "click", recorded, query_id, doc_id, feedback_id, dwell=dwell)


class _RateCommand(click.Command):
    """Lets VALUE be ``-1`` (unknown options pass as arguments) yet names a misspelled option as one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        import difflib
        import re

        options = [p for p in self.get_params(ctx) if isinstance(p, click.Option)]
        known = {o for p in options for o in (*p.opts, *p.secondary_opts)}
        takes_value = {o for p in options if not p.is_flag for o in p.opts}
        value_next = False
        for arg in args:
            if arg == "--":
                break
            if value_next:  # the value of the option before it (`--feedback-id -abc`)
                value_next = False
                continue
            name = arg.split("=", 1)[0]
            if name in takes_value and "=" not in arg:
                value_next = True
            elif arg.startswith("-") and not re.fullmatch(r"-\d+", arg) and name not in known and not ctx.resilient_parsing:
                raise click.NoSuchOption(name, possibilities=difflib.get_close_matches(name, sorted(known)), ctx=ctx)
        return super().parse_args(ctx, args)


@feedback.command(cls=_RateCommand, context_settings={"ignore_unknown_options": True})  # VALUE may be -1, which is no option
@click.argument("query_id", callback=_id_argument)
@click.argument("doc_id", callback=_id_argument)
@click.argument("value", type=click.Choice(["up", "down", "+1", "-1", "1"]))
@click.option("--feedback-id", default=None, callback=_feedback_id_option, help=_FEEDBACK_ID_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rate(ctx: click.Context, query_id: str, doc_id: str, value: str, feedback_id: str | None, as_json: bool) -> None:
    """Record a thumbs up/down on DOC_ID for QUERY_ID."""
    v = -1 if value in ("down", "-1") else 1
    recorded = _open(ctx).rate(query_id, doc_id, v, feedback_id=feedback_id)
    _echo_feedback(as_json, "rating", f"rating {v:+d}", recorded, query_id, doc_id, feedback_id, value=v)


@feedback.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
@click.pass_context
def import_(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Import FILE: ragtune event JSONL or triplet JSONL (all-or-nothing; importing it again adds nothing)."""
    report = _open(ctx).import_feedback(file)
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(f"imported from {file}: {report.summary()}")


@feedback.command()
@click.option("--format", "fmt", type=click.Choice(["events", "triplets"]), default="events", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File to write (default stdout).")
@click.pass_context
def export(ctx: click.Context, fmt: str, output: Path | None) -> None:
    """Export the log as event JSONL or as mined training triplets."""
    rt = _open(ctx)
    if fmt == "events":
        rows: Any = list(rt.feedback.export_events())  # read (and fail) before the output file is made
    else:
        rows = rt.mine().triplets()
    try:
        out = output.open("w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        raise click.FileError(str(output), hint=exc.strerror or str(exc)) from None
    try:
        n = 0
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"wrote {n} {fmt} to {output}")


@feedback.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Count logged queries, impressions, clicks and ratings."""
    s = _open(ctx).feedback.stats()
    if as_json:
        _echo_json(s)
    else:
        for k, v in s.items():
            click.echo(f"{k:<22}{v}")


@feedback.command()
@click.option("--dry-run", is_flag=True, help="Accepted for scripts: mining only reads the log, so every run is a dry run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def mine(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Mine training pairs from the log and report them: what a LoRA/full refresh trains on, with its
    held-out share (the query tier also trains on those queries, judging each out of fold)."""
    report = _open(ctx).mine().report()
    if as_json:
        _echo_json(report)
    else:
        for k, v in report.items():
            click.echo(f"{k:<34}{v}")


# -- the loop -------------------------------------------------------------------------------------
def _parse_interval(text: str) -> float:
    """Seconds in a duration like ``90s``, ``15m``, ``1h``, ``2d`` or ``300`` (a finite number > 0)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        seconds = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise click.BadParameter(f"expected a duration like 90s, 15m, 1h; got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise click.BadParameter(f"must be a positive duration like 90s, 15m, 1h; got {text!r}")
    return seconds


def _interval_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _parse_interval(value)  # a usage error (exit 2) before anything runs
    return value


def _trial_line(t: dict[str, Any]) -> str:
    from ragtune.trial import repeats_note

    return (
        f"trial {t['id']}: {t['version']} vs {t['baseline']} ({t['tier']} tier, {100 * t['share']:.0f}% of searches): "
        f"{t['wins']} wins, {t['losses']} losses, {t['ties']} ties in {t['searches']} interleaved searches"
        + (f" ({repeats_note(t['repeats'])})" if t.get("repeats") else "")
        + f", p = {t['p_value']:.4f}"
    )


def _print_refresh(report: RefreshReport) -> None:
    if report.settled is not None and report.status != "trial_running":
        s = report.settled
        click.echo(f"trial {s['id']} ({s['version']}): {'promoted' if s['verdict'] == 'promote' else 'dropped'}: {s['reason']}")
    for tier, c in report.checks.items():
        click.echo(f"[{tier}] offline check: {'worth a trial' if c.worth_trial else 'not worth a trial'}: {c.reason}")
    if report.status == "trial_running":
        assert report.trial is not None
        click.echo(_trial_line(report.trial))
        click.echo(f"{report.trial['reason']}; nothing trained while it runs (to train now: `ragtune trial stop`, then `ragtune refresh --force`)")
    elif report.status == "trial_started":
        click.echo(f"{report.reason}; train {report.train_s:.0f}s, re-embed {report.reembed_s:.0f}s, total {report.refresh_s:.0f}s")
        click.echo("watch it with `ragtune trial`; the next `ragtune refresh` decides it once users' clicks do")
    elif report.status == "promoted":
        click.echo(f"promoted {report.version}: {report.reason}; total {report.refresh_s:.0f}s")
    elif report.status == "refused":
        click.echo(f"refused: {report.reason}")
    else:
        click.echo(f"refresh skipped: {report.reason}")


@main.command()
@click.option("--mode", type=click.Choice(["lora", "full", "query", "auto"]), default=None, help="What to train (default from config: lora).")
@click.option("--force", is_flag=True, help="Train even with little new feedback, or soon after a refused LoRA/full candidate (the candidate still needs a trial).")
@click.option("--no-trial", is_flag=True, help="Promote a candidate that passes the offline check at once, without a trial.")
@click.option("--min-new-events", type=click.IntRange(min=0), default=None, help="New clicks/ratings needed (default from config).")
@click.option("--eval-beir", type=click.Path(exists=True, file_okay=False), default=None, help="Decide on this labelled BEIR folder instead of a trial.")
@click.option("--eval-split", default="test", show_default=True, help="Split of --eval-beir.")
@click.option("--watch", is_flag=True, help="Keep running: refresh whenever enough new feedback arrived.")
@click.option("--interval", default="1h", show_default=True, callback=_interval_option, help="With --watch: time between checks (e.g. 30m, 1h).")
@_engine_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def refresh(
    ctx: click.Context, mode: str | None, force: bool, no_trial: bool, min_new_events: int | None, eval_beir: str | None, eval_split: str, watch: bool, interval: str,
    engine: str | None, ray_address: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Settle the live trial, then train one candidate on the feedback and start a trial with it."""
    import time

    if not watch and ctx.get_parameter_source("interval") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--interval is for --watch: add --watch to refresh periodically, or drop --interval")
    seconds = _parse_interval(interval)  # validated by its callback: finite and > 0
    rt = _open(ctx)
    _use_engine(rt, engine, ray_address)
    while True:
        try:
            report = rt.refresh(mode=mode, force=force, trial=not no_trial, eval_beir=eval_beir, eval_split=eval_split, min_new_events=min_new_events)
        except RagtuneError as exc:
            if not watch:
                raise
            click.echo(f"refresh failed, will retry in {interval}: {exc}", err=True)
        else:
            _echo_json(report.to_dict()) if as_json else _print_refresh(report)
        if not watch:
            return
        force = False
        time.sleep(seconds)


@main.command()
@click.argument("action", type=click.Choice(["status", "decide", "stop"]), default="status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trial(ctx: click.Context, action: str, as_json: bool) -> None:
    """The live trial: its wins, losses and p-value (status), act on its test now (decide), or drop it (stop)."""
    rt = _open(ctx)
    if action == "status":
        t = rt.trial()
    elif action == "decide":
        t = rt.decide_trial()
    else:
        t = rt.stop_trial()
    if as_json:
        _echo_json(t)
        return
    if t is None:
        click.echo("no trial is live")
        return
    click.echo(_trial_line(t))
    if t["verdict"] == "continue":
        click.echo(t["reason"])  # "undecided: ..."
    else:
        verdict = {"promote": "promoted", "drop": "dropped"}[t["verdict"]] if action != "status" else f"would be {'promoted' if t['verdict'] == 'promote' else 'dropped'} now"
        click.echo(f"{verdict}: {t['reason']}")


@main.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely, saying what was done.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Check the workspace (pointer, versions, stores, feedback database, leftovers, lock); exit 1 if a problem is left."""
    from ragtune.doctor import diagnose

    report = diagnose(ctx.obj["workspace"], repair=repair)
    if as_json:
        _echo_json(report.to_dict())
    else:
        for f in report.findings:
            click.echo(f.line())
        click.echo(report.summary())
    if not report.healthy:
        ctx.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def versions(ctx: click.Context, as_json: bool) -> None:
    """List versions with their offline checks, trials, feedback counts and dates (* current, ~ live trial)."""
    rows = _open(ctx).versions()
    if as_json:
        _echo_json(rows)
        return
    for v in rows:
        check = (v["metrics"] or {}).get("check") or {}
        fig = f"offline {check['metric']} {check['current']:.4f} -> {check['score']:.4f}" if check else ""
        t = v.get("trial") or {}
        if t.get("state") in ("promoted", "dropped"):
            fig += f"  trial {t['state']}: {t['wins']}W/{t['losses']}L/{t['ties']}T, p = {t['p_value']:.4f}"
        elif t.get("state") == "live":
            fig += "  trial live"
        if v["never_served"] and t.get("state") not in ("live", "dropped"):  # a trial's version served its share of searches
            fig += "  (never served)"
        mark = "*" if v["current"] else ("~" if v["trial_live"] else " ")
        click.echo(f"{mark} {v['name']}  {v['created']}  {v['kind']:<5}  {v['note']}  {fig}".rstrip())


@main.command()
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rollback(ctx: click.Context, version: str | None, as_json: bool) -> None:
    """Make VERSION (default: the current one's parent) current."""
    rt = _open(ctx)
    rows = {v["name"]: v for v in rt.versions()}
    before = next((n for n, v in rows.items() if v["current"]), None)
    name = rt.rollback(version)
    if as_json:
        _echo_json({"current_version": name})
        return

    def n_docs(version: str | None) -> int | None:  # a query tier searches another version's index
        index = rows.get(rows[version]["index_version"]) if version in rows else None
        return None if index is None else int(index["n_docs"])

    now, was = n_docs(name), n_docs(before)
    changed = f" ({now} documents; {before} had {was})" if before not in (None, name) and None not in (now, was) and now != was else ""
    click.echo(f"current version is now {name}{changed}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN", help="A browser origin allowed to call the service (e.g. https://app.example.com, or *); repeatable.")
@click.option("--api-key", envvar="RAGTUNE_API_KEY", default=None, show_envvar=True, help="Key for POST /refresh and /rollback (prefer the env var; unset: those endpoints are off).")
@click.option("--no-access-log", is_flag=True, help="Do not log each request.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, cors_origins: tuple[str, ...], api_key: str | None, no_access_log: bool) -> None:
    """Serve the workspace over HTTP: search, feedback, status, versions, trial, refresh, rollback.

    Needs the `serve` extra (pip install 'ragtune[serve]'). OpenAPI docs at /docs. One process keeps
    the model loaded and follows versions swapped by other processes (refresh, rollback, index).
    """
    try:
        from ragtune.server import serve as run_server
    except ImportError as exc:
        raise click.ClickException(str(exc) if isinstance(exc, RagtuneError) else f"`ragtune serve` needs FastAPI and uvicorn: pip install 'ragtune[serve]' ({exc})") from None
    rt = _open(ctx)
    rt.progress = False  # a refresh started over HTTP runs in the background: no progress bars on the server's terminal
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"ragtune serve: http://{shown}:{port} (workspace {rt.ws.root}, API docs at /docs; refresh and rollback {'need the API key' if api_key else 'are off: set RAGTUNE_API_KEY'})")
    run_server(rt, host=host, port=port, api_key=api_key, cors_origins=cors_origins, log_level="warning" if ctx.obj["quiet"] else "info", access_log=not no_access_log)


if __name__ == "__main__":  # pragma: no cover
    main()
