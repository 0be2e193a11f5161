"""What went wrong talking to the Prefect API, as one of the product's errors.

Prefect's client reports an unreachable or refusing server in several shapes, depending on
where it noticed: ``httpx.ConnectError`` from a request; ``RuntimeError("Failed to reach API at
...")`` from the API version check the flow engine runs before a flow starts (chained on the
connection error, or on the 404 of a wrong URL); a ``PrefectHTTPStatusError`` 401 re-raised
as is from that same check when basic auth (``PREFECT_SERVER_API_AUTH_STRING``) refuses us;
``RuntimeError("Found incompatible versions...")`` for a server of another major version; and
any of these inside an exception group from the runner (``promote serve``). :func:`translate`
walks the whole chain once and names the cause, so every Prefect command fails in one line.

Prefect is imported inside the functions only: the S3-only commands must not pay its import.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from promotion.errors import InfrastructureError, PrefectRefused, PrefectUnreachable

AUTH_HINT = "set PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (user:password)"


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part, if any.

    ``PREFECT_API_URL=http://user:password@host/api`` is a working way to give Prefect's client
    the server's basic-auth credential (httpx sends it), and Prefect derives ``PREFECT_UI_URL``
    from it, credential included. Addresses we show or send (errors, the UI links of webhook
    answers, of ``promote pending`` and of approval events) go through here first.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def api_url() -> str:
    """PREFECT_API_URL without any credentials in it (it may carry ``user:pass@``)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return "(ephemeral: PREFECT_API_URL is not set)"
    return without_credentials(str(url))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def translate(exc: BaseException) -> InfrastructureError | None:
    """The Prefect API problem behind ``exc``, or None when it is not one."""
    import httpx

    url = api_url()
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, httpx.HTTPStatusError) and e.response.status_code in (401, 403):
            code = e.response.status_code
            return PrefectRefused(url, f"authentication was refused (HTTP {code}): {AUTH_HINT}")
    for e in chain:
        if isinstance(e, RuntimeError) and str(e).startswith("Found incompatible versions"):
            return PrefectRefused(url, f"{_first_line(e)}; use a server and client of the same version")
    for e in chain:
        if isinstance(e, httpx.TransportError):
            return PrefectUnreachable(url, f"{type(e).__name__}: {_first_line(e)}")
    for e in chain:
        if isinstance(e, httpx.HTTPStatusError):
            code = e.response.status_code
            if code == 404:
                return PrefectUnreachable(
                    url, "HTTP 404: no Prefect API there (PREFECT_API_URL usually ends in /api)"
                )
            if code >= 500:
                return PrefectUnreachable(url, f"the server answered HTTP {code}")
    for e in chain:
        if isinstance(e, RuntimeError) and str(e).startswith("Failed to reach API"):
            return PrefectUnreachable(url, _first_line(e))
    return None


def check_reachable() -> None:
    """Raise :class:`PrefectUnreachable`/:class:`PrefectRefused` unless the API answers us.

    One authenticated request (the version check Prefect's own engine makes before a run).
    """
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.raise_for_api_version_mismatch()
    except Exception as exc:
        found = translate(exc)
        if found is None:
            raise
        raise found from None
