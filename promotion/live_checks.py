"""Post-deploy live checks: an HTTP smoke check and a Prometheus instant query.

These gates look at the running environment, so they run after the deploy (their kinds are
registered with a ``live_check`` in :mod:`promotion.gate_registry`). Like the other gate
evaluators they never raise for a bad answer: a failed check is a
:class:`~promotion.gates.GateResult` with ``passed=False`` and the reasons; one that could not
be evaluated at all (connection refused, timeout, an answer that is not the Prometheus API) also
has ``errored=True``.

Redirects are not followed: a health URL that redirects (to a login page, say) would otherwise
look healthy. Expect the redirect status explicitly if that is what the URL does. Query strings
are left out of every reason (they may hold tokens).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from promotion.config import HttpCheckGate, PrometheusGate
from promotion.gates import GateResult

#: Characters of a response body quoted in a reason.
EXCERPT = 200
#: Series named in the reasons of a failed Prometheus check; the rest are counted.
MAX_SERIES_SHOWN = 10

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}

Values = dict[str, float | int | str | None]


def _safe(url: str) -> str:
    """The URL without query string and user info, for reasons (they may hold tokens)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "[redacted]" if p.query else "", ""))


def _get(
    client: httpx.Client | None, url: str, timeout: float, params: dict[str, str] | None = None
) -> httpx.Response:
    if client is None:
        with httpx.Client(follow_redirects=False) as own:
            return own.get(url, params=params, timeout=timeout)
    return client.get(url, params=params, timeout=timeout, follow_redirects=False)


def _unreachable(exc: httpx.HTTPError, url: str, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {_safe(url)} within {timeout:g}s"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot reach {_safe(url)}: {detail[:200]}"


def check_http(gate: HttpCheckGate, *, client: httpx.Client | None = None) -> GateResult:
    """GET ``gate.url``: passes when the status is ``expect_status`` and, if set, the body contains
    ``contains``. A connection error or a timeout is a failed, errored result (never an exception).
    """
    name = gate.name or gate.kind
    url = str(gate.url)
    timeout = gate.timeout.total_seconds()
    thresholds: Values = {
        "expect_status": gate.expect_status,
        "contains": gate.contains,
        "timeout_s": timeout,
    }
    started = time.monotonic()
    try:
        resp = _get(client, url, timeout)
    except httpx.HTTPError as exc:
        return GateResult(
            gate=name,
            kind=gate.kind,
            passed=False,
            measured={"status": None},
            thresholds=thresholds,
            reasons=[_unreachable(exc, url, timeout)],
            errored=True,
        )
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    measured: Values = {"status": resp.status_code, "elapsed_ms": elapsed_ms}
    failures: list[str] = []
    if resp.status_code != gate.expect_status:
        failures.append(
            f"{_safe(url)} answered HTTP {resp.status_code}, expected {gate.expect_status}"
            f" (body starts {resp.text[:EXCERPT]!r})"
        )
    if gate.contains is not None:
        found = gate.contains in resp.text
        measured["body_contains"] = "yes" if found else "no"
        if not found:
            failures.append(f"the body of {_safe(url)} does not contain {gate.contains!r}")
    passes = [] if failures else [f"{_safe(url)} answered HTTP {resp.status_code} in {elapsed_ms:g} ms"]
    return GateResult(
        gate=name,
        kind=gate.kind,
        passed=not failures,
        measured=measured,
        thresholds=thresholds,
        reasons=failures or passes,
    )


def check_prometheus(gate: PrometheusGate, *, client: httpx.Client | None = None) -> GateResult:
    """Run ``gate.query`` as a Prometheus instant query and compare the value with the threshold.

    ``GET {url}/api/v1/query?query=...``; the answer must be ``status: success`` with a ``scalar``
    or a ``vector`` result. Every series of a vector must satisfy ``value <op> threshold``; an
    empty vector fails ("query returned no data"), as does NaN. ``measured["value"]`` is the value
    closest to breaking the threshold (the worst series).
    """
    name = gate.name or gate.kind
    url = str(gate.url).rstrip("/") + "/api/v1/query"
    timeout = gate.timeout.total_seconds()
    thresholds: Values = {"query": gate.query, "op": gate.op, "threshold": gate.threshold}

    def errored(reason: str, measured: Values | None = None) -> GateResult:
        return GateResult(
            gate=name,
            kind=gate.kind,
            passed=False,
            measured=measured or {},
            thresholds=thresholds,
            reasons=[reason],
            errored=True,
        )

    try:
        resp = _get(client, url, timeout, params={"query": gate.query})
    except httpx.HTTPError as exc:
        return errored(_unreachable(exc, url, timeout))
    where = _safe(url)
    try:
        doc = resp.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return errored(
            f"{where} answered HTTP {resp.status_code} with a body that is not JSON "
            f"(starts {resp.text[:EXCERPT]!r}); is gate.url the Prometheus server's base URL?"
        )
    if not isinstance(doc, dict):
        return errored(f"{where} answered JSON that is not a Prometheus API response object")
    if doc.get("status") != "success":
        # Prometheus answers errors (bad query, timeout) with 4xx/5xx and errorType/error.
        return errored(
            f"Prometheus refused the query (HTTP {resp.status_code}, status {doc.get('status')!r}): "
            f"{doc.get('errorType', '?')}: {str(doc.get('error', ''))[:EXCERPT]}"
        )
    try:
        series = _series(doc.get("data"))
    except _BadShape as exc:
        return errored(f"unexpected Prometheus answer from {where}: {exc}")
    if series is None:
        return errored(
            f"the query returned a {doc['data'].get('resultType')!r} result; use an instant query "
            "that returns a scalar or a vector (e.g. wrap a range selector in rate() or avg_over_time())"
        )
    if not series:
        return GateResult(
            gate=name,
            kind=gate.kind,
            passed=False,
            measured={"series": 0, "value": None},
            thresholds=thresholds,
            reasons=["query returned no data"],
        )
    compare = _OPS[gate.op]
    bad = [(labels, v) for labels, v in series if math.isnan(v) or not compare(v, gate.threshold)]
    worst = _worst([v for _, v in series], gate.op, gate.threshold)
    measured: Values = {"series": len(series), "value": worst}
    if bad:
        reasons = [
            f"{labels} = {_num(v)}, not {gate.op} {_num(gate.threshold)}"
            for labels, v in bad[:MAX_SERIES_SHOWN]
        ]
        if len(bad) > MAX_SERIES_SHOWN:
            reasons.append(f"... and {len(bad) - MAX_SERIES_SHOWN} more series break the threshold")
        return GateResult(
            gate=name, kind=gate.kind, passed=False, measured=measured, thresholds=thresholds, reasons=reasons
        )
    what = "the value" if len(series) == 1 else f"all {len(series)} series"
    return GateResult(
        gate=name,
        kind=gate.kind,
        passed=True,
        measured=measured,
        thresholds=thresholds,
        reasons=[f"{what} {gate.op} {_num(gate.threshold)} (worst {_num(worst)})"],
    )


class _BadShape(Exception):
    pass


def _series(data: Any) -> list[tuple[str, float]] | None:
    """(labels, value) of each series of a scalar or vector result; None for other result types."""
    if not isinstance(data, dict):
        raise _BadShape("'data' is missing or not an object")
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        return [("scalar", _sample_value(result))]
    if kind == "vector":
        if not isinstance(result, list):
            raise _BadShape("a vector result must be a list")
        out = []
        for item in result:
            if not isinstance(item, dict):
                raise _BadShape("a vector element must be an object with 'metric' and 'value'")
            out.append((_labels(item.get("metric")), _sample_value(item.get("value"))))
        return out
    if kind in ("matrix", "string"):
        return None
    raise _BadShape(f"unknown resultType {kind!r}")


def _sample_value(sample: Any) -> float:
    # A sample is [<unix time>, "<value as a string>"]; the string may be "NaN", "+Inf", "-Inf".
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        raise _BadShape(f'a sample must be [time, "value"], got {str(sample)[:80]}')
    try:
        return float(sample[1])
    except ValueError:
        raise _BadShape(f"sample value {sample[1][:40]!r} is not a number") from None


def _labels(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{}"
    name = str(metric.get("__name__", ""))
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _worst(values: list[float], op: str, threshold: float) -> float:
    """The value closest to (or furthest past) the threshold: what a report should show."""
    nans = [v for v in values if math.isnan(v)]
    if nans:
        return nans[0]
    if op in ("<", "<="):
        return max(values)
    if op in (">", ">="):
        return min(values)
    return max(values, key=lambda v: abs(v - threshold))


def _num(v: float) -> str:
    return f"{v:g}"
