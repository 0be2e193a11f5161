"""The ``promote`` command line.

Exit codes: 0 success; 1 the operation failed (digest mismatch, broken chain, server unreachable);
2 bad usage or invalid input. Errors print as ``Class: message`` on one line, never a traceback.
Every command (and the root callback) goes through one wrapper, :func:`_one_line_errors`, the
only place that maps the error tree of :mod:`promotion.errors` to exit codes
(:func:`exit_code_for`), as Prefect's ``PrefectTyper`` wraps each of its commands.

Commands that only touch S3 (publish, attest, status, history, ledger verify, config validate,
verify, plan, metrics, report) never import Prefect, which costs seconds to import; commands that
talk to Prefect import it inside the command.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer

from promotion.errors import PromotionError, UsageError

if TYPE_CHECKING:
    import datetime as dt

    from rich.console import Console

    from promotion.config import Pipeline
    from promotion.evidence_resume import Resumption
    from promotion.hash_ahead import HashAhead
    from promotion.publish_ahead import PublishAhead
    from promotion.store import ArtifactStore, AttestResult, PublishResult

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: PromotionError) -> int:
    """The exit code of an error: 2 when the input was wrong, 1 when the operation failed.

    The one mapping from the error tree to exit codes; the errors themselves carry none.
    """
    return 2 if isinstance(exc, UsageError) else 1


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command; a PromotionError (or a Prefect API problem) is one line and its exit code.

    Prefect's client raises an unreachable or refusing API in many shapes (see
    :mod:`promotion.prefect_api`), from inside the flow engine too; uncaught, Python printed the
    whole chain (135 lines for ``promote run``). Translated only when Prefect was imported: an
    S3-only command cannot have met it, and must not import it on its error path either.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except PromotionError as exc:
            found: PromotionError = exc
        except Exception as exc:
            if "prefect" not in sys.modules:
                raise
            from promotion.prefect_api import translate

            translated = translate(exc)
            if translated is None:
                raise
            found = translated
        sys.stderr.write(f"{type(found).__name__}: {found}\n")
        raise typer.Exit(exit_code_for(found))

    return wrapper


class PromoteTyper(typer.Typer):
    """A Typer whose every command and callback is wrapped in :func:`_one_line_errors`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(f: F) -> F:
            register(_one_line_errors(f))
            return f

        return decorator

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().callback(*args, **kwargs)

        def decorator(f: F) -> F:
            register(_one_line_errors(f))
            return f

        return decorator


app = PromoteTyper(
    name="promote",
    help="Promote immutable, content-addressed artifacts through environments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ledger_app = PromoteTyper(help="Inspect the promotion ledger.", no_args_is_help=True)
webhook_app = PromoteTyper(help="The CI webhook receiver.", no_args_is_help=True)
config_app = PromoteTyper(help="Check the pipeline file.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(config_app, name="config")
app.add_typer(webhook_app, name="webhook")

# Tables hold full digests; when stdout is a pipe or a file, do not squeeze them to 80 columns.


class _LazyConsole:
    """A rich ``Console`` made on first use: importing rich costs ~40 ms of start-up that a
    command printing only plain lines (``publish``, which writes with ``sys.stdout``) need not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


out = cast("Console", _LazyConsole(highlight=False, width=None if sys.stdout.isatty() else 200))
err = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True))

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Pipeline file (default: $PROMOTION_CONFIG, else ./promotion.yaml).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


class State:
    config: Path | None = None
    #: The publish that ``promote`` started before this module was imported (promotion/entry.py).
    publish_ahead: PublishAhead | None = None


state = State()


@app.callback()
def _root(config: ConfigOpt = None) -> None:
    state.config = config


def _pipeline() -> Pipeline:
    from promotion.config import load_pipeline

    return load_pipeline(state.config)


def _store() -> ArtifactStore:
    from promotion.store import ArtifactStore

    return ArtifactStore(_pipeline())


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else ""


# --- publish ---------------------------------------------------------------------------------------


@app.command()
def publish(
    path: Annotated[Path, typer.Argument(help="The artifact file to publish.", show_default=False)],
    service: Annotated[str, typer.Option("--service", "-s", help="Service it belongs to.")],
    version: Annotated[str | None, typer.Option(help="Human version label (the digest is the name).")] = None,
    evidence: Annotated[
        list[str] | None,
        typer.Option(
            "--evidence",
            "-e",
            help="KIND=PATH, repeatable; KIND is junit, coverage, sarif, perf or other.",
        ),
    ] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks",
            help="Accept evidence paths that are symbolic links to files inside the current directory.",
        ),
    ] = False,
    commit: Annotated[str | None, typer.Option(help="Source commit (default: from CI variables).")] = None,
    commit_author: Annotated[str | None, typer.Option(help="Author of the commit.")] = None,
    commit_time: Annotated[
        str | None,
        typer.Option(
            help="When the commit was made, ISO 8601 with offset (default: CI_COMMIT_TIMESTAMP, "
            "else git log -1 --format=%cI in a checkout); the start of the change's lead time."
        ),
    ] = None,
    build_url: Annotated[str | None, typer.Option(help="CI build URL (default: from CI variables).")] = None,
    builder: Annotated[str | None, typer.Option(help="CI system that built it.")] = None,
    actor: Annotated[
        str | None, typer.Option("--as", help="Who publishes (default: CI user or login).")
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(
            help="Read PATH as this stack (wheel, sdist, npm, jar, war, oci, helm, zip, tar, blob) "
            "instead of recognising it."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload PATH under its sha256 digest, with its evidence, and print the digest.

    The artifact's stack, name and version are read from the file itself; a --version that
    disagrees with the artifact's own is refused, naming both.
    """
    from promotion.hash_ahead import HashAhead

    # The executable started this publish's hash pass and upload before the CLI was imported
    # (promotion/publish_ahead.py); the store adopts the upload only if it is this publish's.
    upload = state.publish_ahead
    if upload is not None and upload.path != path:
        upload = None
    # Else first, so that the hash pass runs while the rest of start-up does (hash_ahead.py);
    # None when the file is small or cannot be opened (the checks below then say why).
    ahead = upload.hashed if upload is not None else HashAhead.start(path)
    try:
        result = _publish(
            path,
            service=service,
            version=version,
            evidence=evidence,
            follow_symlinks=follow_symlinks,
            commit=commit,
            commit_author=commit_author,
            commit_time=commit_time,
            build_url=build_url,
            builder=builder,
            actor=actor,
            stack=stack,
            ahead=ahead,
            upload=upload,
        )
    finally:
        # The executable closes its own (promotion/entry.py), once no part reads the file.
        if ahead is not None and upload is None:
            ahead.close()
    if as_json:
        _emit_json(
            {
                "digest": str(result.digest),
                "already_published": result.already_published,
                "uploaded_bytes": result.uploaded_bytes,
                "attached": [r.model_dump(mode="json") for r in result.attached],
                "record": result.record.model_dump(mode="json"),
            }
        )
        return
    what = "already published" if result.already_published else "published"
    rec = result.record
    own = f" ({rec.stack}{' ' + rec.name if rec.name else ''})" if rec.stack else ""
    # Plain writes, not rich: nothing here needs styling, and rich is not imported for it.
    sys.stderr.write(
        f"{what}: {service} {rec.version or ''}{own} {rec.size} bytes, "
        f"{len(result.record.evidence)} evidence file(s), {result.uploaded_bytes} bytes uploaded\n"
    )
    for ref in result.attached:
        sys.stderr.write(f"attached: {ref.kind} {ref.filename} ({ref.digest.short}, {ref.size} bytes)\n")
    sys.stdout.write(f"{result.digest}\n")


def _publish(
    path: Path,
    *,
    service: str,
    version: str | None,
    evidence: list[str] | None,
    follow_symlinks: bool,
    commit: str | None,
    commit_author: str | None,
    commit_time: str | None,
    build_url: str | None,
    builder: str | None,
    actor: str | None,
    stack: str | None,
    ahead: HashAhead | None,
    upload: PublishAhead | None = None,
) -> PublishResult:
    from promotion import ci_context
    from promotion.models import Provenance
    from promotion.store import MULTIPART_THRESHOLD, parse_evidence

    pipeline = _pipeline()
    pipeline.service(service)  # refuse an unknown service before sending anything
    if not path.is_file():
        raise _usage(f"no such file: {path}")
    when = ci_context.parse_commit_time(commit_time) if commit_time is not None else None
    ev = parse_evidence(evidence or [], follow_symlinks=follow_symlinks)
    provenance = Provenance(
        commit=commit or ci_context.ci_commit(),
        commit_author=commit_author or ci_context.ci_commit_author(),
        commit_time=when or ci_context.ci_commit_time(),
        build_url=build_url or ci_context.ci_build_url(),
        builder=builder or ci_context.ci_builder(),
        published_by=ci_context.current_actor(actor),
    )
    from promotion.store import ArtifactStore

    # Off while the CLI started up if the executable started an upload (entry.py). What start-up
    # made lives as long as the process: frozen, the collections from here on leave it alone.
    gc.freeze()
    gc.enable()
    store = ArtifactStore(pipeline)
    size = path.stat().st_size
    if sys.stderr.isatty() and size > MULTIPART_THRESHOLD:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(f"uploading {path.name}", total=size)
            result = store.publish(
                path,
                service=service,
                version=version,
                provenance=provenance,
                evidence=ev,
                progress=lambda n: bar.advance(task, n),
                stack=stack,
                hashed=ahead,
                ahead=upload,
            )
    else:
        result = store.publish(
            path,
            service=service,
            version=version,
            provenance=provenance,
            evidence=ev,
            stack=stack,
            hashed=ahead,
            ahead=upload,
        )
    return result


@app.command()
def attest(
    service: Annotated[str, typer.Argument(help="Service the artifact belongs to.", show_default=False)],
    digest: Annotated[str, typer.Argument(help="The published digest (sha256:...).", show_default=False)],
    evidence: Annotated[
        list[str],
        typer.Option("--evidence", "-e", help="KIND=PATH, repeatable (as for publish)."),
    ],
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="As for publish.")] = False,
    commit: Annotated[str | None, typer.Option(help="Commit of the attesting job (default: CI).")] = None,
    build_url: Annotated[str | None, typer.Option(help="URL of the attesting job (default: CI).")] = None,
    builder: Annotated[str | None, typer.Option(help="CI system of the attesting job.")] = None,
    actor: Annotated[
        str | None, typer.Option("--as", help="Who attests (default: CI user or login).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Attach evidence that arrived later (a re-scan, a long suite) to a published artifact."""
    from promotion import ci_context
    from promotion.digest import Digest
    from promotion.models import Provenance
    from promotion.store import ArtifactStore, parse_evidence

    pipeline = _pipeline()
    pipeline.service(service)
    parsed = Digest(digest)
    ev = parse_evidence(evidence, follow_symlinks=follow_symlinks)
    provenance = Provenance(
        commit=commit or ci_context.ci_commit(),
        build_url=build_url or ci_context.ci_build_url(),
        builder=builder or ci_context.ci_builder(),
        published_by=ci_context.current_actor(actor),
    )
    store = ArtifactStore(pipeline)
    result = store.attest(service, parsed, ev, provenance=provenance)
    resumes, replan_error = _resumed_by(store, result)
    if as_json:
        _emit_json(
            {
                "digest": str(parsed),
                "attached": [r.model_dump(mode="json") for r in result.attached],
                "already_attached": [r.model_dump(mode="json") for r in result.already],
                "seq": result.event.seq if result.event else None,
                "resumes": [r.as_dict() for r in resumes],
                "resumes_error": replan_error,
            }
        )
        return
    for ref in result.attached:
        out.print(f"attached: {ref.kind} {ref.filename} ({ref.digest.short}, {ref.size} bytes)")
    for ref in result.already:
        out.print(f"already attached: {ref.kind} {ref.filename} ({ref.digest.short})")
    if result.event is not None:
        out.print(f"recorded: ledger record {result.event.seq} of {service}, by {result.event.actor}")
    for resumed in resumes:
        out.print(resumed.line(), soft_wrap=True)  # one line: it ends with a command to copy
    if replan_error:
        err.print(f"attested, but which waiting stage it resumes is unknown: {replan_error}")


def _resumed_by(store: ArtifactStore, result: AttestResult) -> tuple[list[Resumption], str | None]:
    """The stages waiting for what ``result`` attached (``wait_for``), re-planned; or why not known.

    The attest itself is done and recorded: a failure to re-plan (S3 down meanwhile) is reported
    beside it, not as the command's failure (a CI retry would only find it attached already).
    """
    from promotion.evidence_resume import resumed_by

    try:
        return resumed_by(store, result), None
    except PromotionError as exc:
        return [], f"{type(exc).__name__}: {exc}"


def _usage(message: str) -> PromotionError:
    from promotion.errors import UsageError

    return UsageError(message)


# --- status / history ------------------------------------------------------------------------------


@app.command()
def status(
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which digest is in which environment, since when, by whom (from the ledger)."""
    store = _store()
    pipeline = store.pipeline
    services = [pipeline.service(service).name] if service else [s.name for s in pipeline.services]
    rows: list[dict[str, Any]] = []
    for name in services:
        st = store.ledger.state(name)
        stack_of = _stacks_of(
            store, name, {e.digest for e in [*st.environments.values(), st.latest_published] if e}
        )
        attested_of = _attested_of(store, name, st)
        for env in pipeline.environment_names:
            cur = st.environments.get(env)
            rows.append(
                {
                    "service": name,
                    "environment": env,
                    "digest": str(cur.digest) if cur else None,
                    "version": cur.version if cur else None,
                    "stack": stack_of.get(str(cur.digest)) if cur else None,
                    "since": cur.since.isoformat() if cur else None,
                    "by": cur.by if cur else None,
                    "attested": attested_of.get(str(cur.digest), []) if cur else [],
                }
            )
        latest = st.latest_published
        rows.append(
            {
                "service": name,
                "environment": "(latest published)",
                "digest": str(latest.digest) if latest else None,
                "version": latest.version if latest else None,
                "stack": stack_of.get(str(latest.digest)) if latest else None,
                "since": latest.since.isoformat() if latest else None,
                "by": latest.by if latest else None,
                "attested": attested_of.get(str(latest.digest), []) if latest else [],
            }
        )
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table

    table = Table(title="Promotion status", title_justify="left")
    for col in ("service", "environment", "digest", "version", "stack", "since", "by", "attested"):
        table.add_column(col, no_wrap=col == "digest")
    for r in rows:
        table.add_row(
            r["service"],
            r["environment"],
            r["digest"] or "—",
            r["version"] or "",
            r["stack"] or "",
            (r["since"] or "")[:19].replace("T", " ") + ("Z" if r["since"] else ""),
            r["by"] or "",
            ", ".join(f"{a['filename']} ({a['by']}, {a['at'][:16]}Z)" for a in r["attested"]),
        )
    out.print(table)


@app.command()
def history(
    service: Annotated[str, typer.Argument(help="Service whose ledger to show.", show_default=False)],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only events of this environment.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every ledger event of a service, oldest first."""
    store = _store()
    store.pipeline.service(service)
    if env is not None:
        store.pipeline.environment(env)
    everything = store.ledger.records(service)
    # The stack of a digest is in its ``published`` event (older events have none: "").
    stack_of = {str(r.digest): str(r.details["stack"]) for r in everything if r.details.get("stack")}
    records = [r for r in everything if env is None or r.environment == env]
    if as_json:
        _emit_json(
            [
                {
                    **r.model_dump(mode="json", exclude={"state"}),
                    "stack": stack_of.get(str(r.digest)),
                    **_judged(r),
                }
                for r in records
            ]
        )
        return
    from rich.table import Table

    table = Table(title=f"History of {service}" + (f" in {env}" if env else ""), title_justify="left")
    for col in ("seq", "at", "event", "environment", "digest", "version", "stack", "by", "reason"):
        table.add_column(col, no_wrap=col in ("digest", "at"))
    for r in records:
        table.add_row(
            str(r.seq),
            _when(r.at),
            r.event + (" REFUSED" if _judged(r).get("counted") is False else ""),
            r.environment or "",
            r.digest.short,
            r.version or "",
            stack_of.get(str(r.digest), ""),
            r.actor,
            _history_reason(r),
        )
    out.print(table)
    if not records:
        err.print("no events yet")


def _dora_scope(
    pipeline: Pipeline, service: str | None, env: str | None, since: str
) -> tuple[list[str], list[str], str, dt.timedelta]:
    """The services, all environments, the environment measured (default prod, else the last
    one) and the window (a timedelta) of ``promote metrics`` and ``promote report``."""
    import datetime as dt

    from promotion.config import parse_duration

    names = [pipeline.service(service).name] if service else [s.name for s in pipeline.services]
    envs = [e.name for e in pipeline.environments]
    environment = pipeline.environment(env).name if env else ("prod" if "prod" in envs else envs[-1])
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise _usage(f"--since: {exc}") from None
    if window <= dt.timedelta(0):
        raise _usage(f"--since: {since!r} is an empty window")
    return names, envs, environment, window


@app.command()
def metrics(
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment (default: prod, else the last one).")
    ] = None,
    since: Annotated[str, typer.Option("--since", help="Window, as the pipeline file's durations.")] = "30d",
    as_json: JsonOpt = False,
) -> None:
    """The five DORA metrics per service from the ledger, each with its DORA performance band."""
    import datetime as dt

    from promotion.metrics.reading import measure
    from promotion.metrics.text import render

    store = _store()
    names, _, environment, window = _dora_scope(store.pipeline, service, env, since)
    now = dt.datetime.now(dt.UTC)
    found = [measure(store.ledger, name, environment, now - window, now) for name in names]
    if as_json:
        _emit_json([m.model_dump(mode="json") for m in found])
        return
    out.print("\n\n".join(render(m) for m in found), markup=False, highlight=False)


REPORT_PATH = Path("report.html")


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = REPORT_PATH,
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="DORA figures for (default: prod, else the last one).")
    ] = None,
    since: Annotated[str, typer.Option("--since", help="Window, as the pipeline file's durations.")] = "90d",
) -> None:
    """The delivery dashboard: one self-contained HTML file (figures, charts, timelines, state)."""
    import datetime as dt
    import os

    from promotion.dashboard.html import render
    from promotion.dashboard.model import gather

    store = _store()
    names, envs, environment, window = _dora_scope(store.pipeline, service, env, since)
    now = dt.datetime.now(dt.UTC)
    found = gather(store.ledger, names, envs, environment, now - window, now)
    page = render(found).encode()
    # Written beside the target and renamed over it: a reader never opens half a report.
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(page)
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _usage(f"-o {output}: cannot write the report ({exc.strerror or exc})") from None
    out.print(str(output), markup=False, highlight=False)
    out.print(
        f"{len(found.services)} service(s), {found.deployments} deployment(s) to {environment}"
        f" since {found.since:%Y-%m-%d %H:%M}Z",
        markup=False,
        highlight=False,
    )


def _stacks_of(store: ArtifactStore, service: str, digests: set[Any]) -> dict[str, str]:
    """digest -> stack from the artifact records (one small GET per digest shown); a record
    written before stacks were recognised has none."""
    found: dict[str, str] = {}
    for digest in digests:
        record = store.find_record(service, digest)
        if record is not None and record.stack:
            found[str(digest)] = record.stack
    return found


def _attested_of(store: ArtifactStore, service: str, st: Any) -> dict[str, list[dict[str, str]]]:
    """digest -> the attested reports of its effective evidence (kind, file, who, when), for the
    digests shown that have any (their ``attested`` records and artifact record are read)."""
    from promotion.evidence_set import evidence_for

    shown = {e.digest for e in [*st.environments.values(), st.latest_published] if e}
    found: dict[str, list[dict[str, str]]] = {}
    for digest in sorted((d for d in shown if str(d) in st.attested), key=str):
        record = store.find_record(service, digest)
        if record is None:
            continue
        found[str(digest)] = [
            {
                "kind": e.ref.kind,
                "filename": e.ref.filename,
                "by": e.attached_by,
                "at": e.attached_at.isoformat(),
            }
            for e in evidence_for(store.ledger, record, st)
            if e.seq is not None
        ]
    return found


def _judged(rec: Any) -> dict[str, Any]:
    """``counted`` and ``why`` of an ``approval`` record (a refused answer is no approval)."""
    if rec.event != "approval":
        return {}
    return {"counted": bool(rec.details.get("counted")), "why": str(rec.details.get("why", ""))}


def _history_reason(rec: Any) -> str:
    if rec.event == "attested":
        files = ", ".join(f"{e.get('kind')} {e.get('filename')}" for e in rec.details.get("evidence", []))
        return f"{files} (via {rec.details.get('via', 'attest')})"
    judged = _judged(rec)
    said = f"{rec.details.get('decision', '')}: {rec.reason}" if judged else rec.reason
    if judged and not judged["counted"]:
        return f"{said} (refused: {judged['why']})"
    return said


# --- verification ----------------------------------------------------------------------------------


@ledger_app.command("verify")
def ledger_verify(
    service: Annotated[str | None, typer.Argument(help="Service (default: all).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-check the hash chain; exit 1 naming any edited, removed or reordered record."""
    store = _store()
    names = [store.pipeline.service(service).name] if service else [s.name for s in store.pipeline.services]
    reports = [store.ledger.verify(n) for n in names]
    if as_json:
        _emit_json(
            [
                {
                    "service": r.service,
                    "records": r.records,
                    "head": r.head,
                    "ok": r.ok,
                    "findings": r.findings,
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            if r.ok:
                out.print(f"ok      {r.service}: {r.records} records, head {r.head or '(empty)'}")
            else:
                out.print(f"BROKEN  {r.service}: {r.records} records")
                for f in r.findings:
                    out.print(f"        - {f}")
    if not all(r.ok for r in reports):
        bad = [r for r in reports if not r.ok]
        from promotion.errors import LedgerCorrupt

        raise LedgerCorrupt(bad[0].service, bad[0].findings)


@app.command()
def verify(
    digest: Annotated[str, typer.Argument(help="sha256:<hex> of a published blob.", show_default=False)],
    full: Annotated[bool, typer.Option("--full", help="Download and re-hash every byte.")] = False,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="Compare with this service's artifact record.")
    ] = None,
) -> None:
    """Check that the stored bytes still match DIGEST (cheap: S3's checksum; --full: re-hash)."""
    from promotion.digest import Digest

    d = Digest(digest)
    store = _store()
    recorded = store.record(service, d).s3_checksum if service else None
    result = store.verify_full(d) if full else store.verify_cheap(d, recorded)
    out.print(f"ok {d} ({result.detail})")


@config_app.command("validate")
def config_validate(
    file: Annotated[
        Path | None, typer.Argument(help="Pipeline file (default: as --config).", show_default=False)
    ] = None,
) -> None:
    """Validate a pipeline file; print its stages or every problem with its field path."""
    from promotion.config import config_path, load_pipeline

    path = file or config_path(state.config)
    pipeline = load_pipeline(path, apply_env=False)
    out.print(
        f"ok {path}: {len(pipeline.services)} service(s), environments "
        + " → ".join(e.name for e in pipeline.environments)
    )


# --- promoting (these talk to Prefect, so they import it inside) --------------------------------------


@app.command()
def plan(
    service: Annotated[str, typer.Argument(help="Service.", show_default=False)],
    digest: Annotated[str, typer.Argument(help="sha256:<hex> to promote.", show_default=False)],
    to: Annotated[str | None, typer.Option("--to", help="Stop after this environment.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Say what a promotion would do, stage by stage, and when; change nothing."""
    from promotion.digest import Digest
    from promotion.plan import plan as make_plan

    store = _store()
    p = make_plan(store, service, Digest(digest), to=to)
    if as_json:
        _emit_json(p.as_dict())
        return
    out.print(f"{service} {p.digest} (version {p.version or 'n/a'}); reached: {p.reached or 'none'}")
    if not p.stages:
        out.print(p.summary())
        return
    for s in p.stages:
        when = f" — earliest {_when(s.earliest)}" if s.earliest else ""
        if s.waits_until:
            when = f" — waits until {_when(s.waits_until)} for evidence (resumed when it is attached)"
        out.print(f"\n[bold]{s.environment}[/bold]: {s.action.replace('_', ' ')}{when}")
        if s.approval:
            out.print(f"  approval: {s.approval}")
        for r in s.gates:
            mark = "pass" if r.passed else ("ERROR" if r.errored else "FAIL")
            if r.waiting_until is not None:
                mark = "WAIT"
            out.print(f"  {mark:5} {r.gate}: {'; '.join(r.reasons)}")
        for reason in s.reasons if not s.gates else []:
            out.print(f"  {reason}")


def _api_url() -> str:
    from promotion.prefect_api import api_url

    return api_url()


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="Service.", show_default=False)],
    digest: Annotated[str, typer.Argument(help="sha256:<hex> to promote.", show_default=False)],
    to: Annotated[str | None, typer.Option("--to", help="Stop after this environment.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate every gate, change nothing.")] = False,
    actor: Annotated[str | None, typer.Option("--as", help="Who requests the promotion.")] = None,
    hotfix: Annotated[
        bool,
        typer.Option("--hotfix", help="An unplanned deployment (recorded; DORA's rework rate counts it)."),
    ] = False,
) -> None:
    """Run the promotion pipeline against the configured Prefect API (PREFECT_API_URL)."""
    from promotion import ci_context
    from promotion.digest import Digest

    Digest(digest)
    _pipeline().service(service)
    from flows.pipeline import promote_pipeline

    final = promote_pipeline(
        service=service,
        digest=digest,
        to=to,
        dry_run=dry_run,
        requested_by=ci_context.current_actor(actor),
        config=str(state.config) if state.config else None,
        unplanned=hotfix,
        return_state=True,
    )
    out.print(final.message or final.type.value)
    if not final.is_completed():
        raise typer.Exit(1)


TargetArg = Annotated[
    str,
    typer.Argument(
        help="The paused stage run, its pipeline run, or SERVICE (then give ENV).", show_default=False
    ),
]
EnvArg = Annotated[
    str | None,
    typer.Argument(help="With SERVICE: the environment whose open request to answer.", show_default=False),
]


@app.command()
def approve(
    target: TargetArg,
    approver: Annotated[str, typer.Option("--as", help="Your name, as listed in the pipeline file.")],
    env: EnvArg = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")] = "",
) -> None:
    """Approve a waiting promotion: recorded in the ledger, then sent to the paused run.

    Prints whether it counted, was refused (and why) or what is still needed; exit 1 when the
    run is gone (the decision is recorded and counts for the next `promote run`).
    """
    from promotion.answers import decide

    # Names typed by people: printed as they are, never read as console markup.
    out.print(decide(target, env, "approve", approver, reason, state.config), markup=False)


@app.command()
def reject(
    target: TargetArg,
    approver: Annotated[str, typer.Option("--as", help="Your name, as listed in the pipeline file.")],
    env: EnvArg = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (required; recorded in the ledger).")] = "",
) -> None:
    """Reject a waiting promotion: recorded in the ledger, then sent to the paused run."""
    from promotion.answers import decide

    if not reason.strip():
        raise _usage("--reason must say why the promotion is rejected")
    # Names typed by people: printed as they are, never read as console markup.
    out.print(decide(target, env, "reject", approver, reason, state.config), markup=False)


@app.command()
def pending(
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every open approval request: what waits, since when, until when, who decided, who may still."""
    from promotion.requests import pending_rows

    store = _store()
    pipeline = store.pipeline
    if env is not None:
        pipeline.environment(env)
    services = [pipeline.service(service).name] if service else [s.name for s in pipeline.services]
    rows = pending_rows(pipeline, store.ledger, services, env)
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        err.print("no approval request is open")
        return
    # One block per request: digests and links are too wide for a table's columns.
    for r in rows:
        said = [
            f"{d['approver']} {d['decision']}" + (" (counted)" if d["counted"] else f" REFUSED: {d['why']}")
            for d in r["decisions"]
        ]
        lines = [
            f"{r['service']} {r['environment']} {r['digest']} (version {r['version'] or 'n/a'})",
            f"  waiting since {_iso(r['since'])}, deadline {_iso(r['deadline'])}",
            f"  approvals {r['approvals']}" + (": " + "; ".join(said) if said else ""),
            f"  may still approve: {', '.join(r['may_still_approve']) or 'nobody'}",
            f"  link: {r['ui_url'] or r['flow_run_id'] or 'not known'}",
        ]
        for line in lines:  # names typed by people: never read as console markup
            out.print(line, markup=False)


def _iso(value: str) -> str:
    return value[:19].replace("T", " ") + "Z"


@app.command()
def rollback(
    service: Annotated[str, typer.Argument(help="Service.", show_default=False)],
    env: Annotated[str, typer.Option("--env", "-e", help="Environment to roll back.")],
    to: Annotated[str | None, typer.Option("--to", help="A digest that ran there before.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")] = "",
    actor: Annotated[str | None, typer.Option("--as", help="Who rolls back.")] = None,
) -> None:
    """Put an environment back on its previous digest (or --to one that ran there before)."""
    from promotion import ci_context
    from promotion.digest import Digest

    pipeline = _pipeline()
    pipeline.service(service)
    pipeline.environment(env)
    if to is not None:
        Digest(to)
    from flows.rollback import rollback as rollback_flow

    st = rollback_flow(
        service=service,
        environment=env,
        to_digest=to,
        requested_by=ci_context.current_actor(actor),
        reason=reason,
        config=str(state.config) if state.config else None,
        return_state=True,
    )
    if not st.is_completed():
        err_ = st.result(raise_on_failure=False)
        if isinstance(err_, PromotionError):
            raise err_
        raise PromotionError(st.message or "rollback failed")
    result = st.result()
    out.print(f"{service} {env}: rolled back from {result['from']} to {result['to']}")


@app.command()
def setup() -> None:
    """Prepare a new installation: check the bucket, the crash-detection automation. Idempotent."""
    pipeline = _pipeline()
    from promotion.s3 import S3

    S3(pipeline.store).check_bucket()
    out.print(f"ok bucket {pipeline.store.bucket} is reachable")
    from flows.setup import CRASH_AUTOMATION, ensure_crash_automation, register_blocks

    automations = ensure_crash_automation()
    blocks = register_blocks()
    from promotion.heartbeats import CRASH_AFTER_S

    out.print(
        f"ok automation {CRASH_AUTOMATION!r} ({len(automations)}): "
        f"runs without a heartbeat for {CRASH_AFTER_S}s end Crashed"
    )
    out.print(f"ok block types registered: {', '.join(blocks)}")
    from flows.setup import ensure_notification_automations
    from promotion.config import config_path

    notify = pipeline.notifications.approvals
    # Names the block, never its URL: a webhook URL is a credential.
    notified = ensure_notification_automations(pipeline, str(config_path(state.config)))
    if notify is None:
        out.print("ok approval notifications: none configured (notifications.approvals)")
    else:
        kinds = ", ".join(notify.events)
        out.print(f"ok approval notifications through {notify.block} ({len(notified)} automations: {kinds})")
    from flows.owner_notifications import ensure_owner_automations

    told = ensure_owner_automations(pipeline, str(config_path(state.config)))
    # Names the targets' blocks and webhook secrets' variables, never a URL or a secret.
    for svc in pipeline.services:
        targets = [f"{o.name} ({o.target})" for o in svc.owners]
        out.print(f"ok owners of {svc.name}: {', '.join(targets) or 'none configured (services[].owners)'}")
    out.print(f"ok owner notifications: {len(told)} automations")


@app.command()
def sweep(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report; change nothing.")] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete unreferenced blobs older than sweep.retention.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly sweep now against PREFECT_API_URL (promotions start as deployment runs)."""
    if dry_run and apply:
        raise _usage("--apply deletes blobs; it cannot be combined with --dry-run")
    _pipeline()  # a bad pipeline file fails here, before Prefect is imported
    from flows.sweep import nightly_sweep
    from promotion.sweep import SweepReport

    st = nightly_sweep(
        dry_run=dry_run,
        apply_retention=apply,
        config=str(state.config) if state.config else None,
        return_state=True,
    )
    report = st.result(raise_on_failure=False)
    if isinstance(report, SweepReport):
        if as_json:
            _emit_json(report.model_dump(mode="json", exclude={"services": {"__all__": {"refs"}}}))
        else:
            from rich.table import Table

            table = Table(title="Nightly sweep" + (" (dry run)" if dry_run else ""), title_justify="left")
            for col in ("service", "kind", "environment", "digest", "action", "reason"):
                table.add_column(col)
            for r in report.rows():
                table.add_row(
                    r["service"], r["kind"], r["environment"], r["digest"][:19], r["action"], r["reason"]
                )
            out.print(table)
    # With --json, stdout holds the JSON alone.
    (err if as_json else out).print(st.message or st.type.value)
    if not st.is_completed():
        raise typer.Exit(1)


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(help="At most this many flow runs at once.")] = None,
) -> None:
    """Serve the pipeline, rollback and nightly-sweep deployments from this process (Ctrl-C stops)."""
    from promotion.config import config_path

    pipeline = _pipeline()
    from flows.serve import serve_all

    serve_all(pipeline, config_path(state.config), limit=limit)


@webhook_app.command("serve")
def webhook_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
) -> None:
    """Receive signed CI webhooks (POST /hooks/{github,gitlab,standard}) and start pipeline runs."""
    pipeline = _pipeline()
    if not pipeline.webhooks.sources:
        raise _usage("no webhook sources are configured: add webhooks.sources to the pipeline file")
    from promotion.prefect_api import check_reachable
    from promotion.webhook import serve as serve_webhooks

    # Every delivery starts a run through Prefect: fail now, in one line, rather than on each one.
    check_reachable()
    serve_webhooks(pipeline, host=host, port=port)


# --- entry point -----------------------------------------------------------------------------------


def _app_for(args: list[str]) -> typer.Typer:
    """``app``, or a copy of it holding only the top-level commands and groups ``args`` names.

    Before it parses anything, typer turns the signature of every command of the app into click
    parameters, evaluating each annotation: ~25 ms of every run's start-up, spent on the 15
    commands it does not run. The copy keeps the root callback and every command or group whose
    name is among the arguments, so the one being run is there and the arguments parse as they
    would with ``app``. Without such a name (``promote``, an unknown command), or with ``--help``
    before it (the root's help lists every command), it is ``app`` itself.
    """
    from typer.main import get_command_name

    commands = {
        c.name or get_command_name(c.callback.__name__): c for c in app.registered_commands if c.callback
    }
    groups = {g.name: g for g in app.registered_groups if g.name}
    named = [n for n in [*commands, *groups] if n in args]
    first = min((args.index(n) for n in named), default=None)
    if first is None or "--help" in args[:first]:
        return app
    subset = copy.copy(app)
    subset.registered_commands = [c for n, c in commands.items() if n in named]
    subset.registered_groups = [g for n, g in groups.items() if n in named]
    return subset


def main(argv: list[str] | None = None, publish_ahead: PublishAhead | None = None) -> None:
    """Run the CLI; map errors to one line on stderr and an exit code. ``publish_ahead``: the
    publish the executable already started (promotion/entry.py), for the command to adopt."""
    from promotion import heartbeats

    state.publish_ahead = publish_ahead

    # Before any command imports Prefect (which reads its settings once): the flow runs this
    # process runs or serves send heartbeats, so a killed one ends Crashed (see heartbeats.py).
    heartbeats.enable()
    args = sys.argv[1:] if argv is None else argv
    # Typer handles usage errors itself (exit 2, with the usage line); ours are handled, one
    # line and an exit code, by the wrapper around every command (PromoteTyper).
    try:
        _app_for(args)(args=args, prog_name="promote")
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
