"""Helm charts (``helm package`` output): name and version from ``<chart>/Chart.yaml``.

``helm package`` writes Chart.yaml as the first member (chartutil's writeTarContents), so only
the first KiB of the stream is decompressed. Chart.yaml is read with ``yaml.safe_load`` and
bounded in size like every member.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from promotion.stacks import Probe, StackInfo, _members, refuse

STACK = "helm"
_CHART_YAML = re.compile(r"^[^/]+/Chart\.yaml$")


def claims(probe: Probe) -> str | None:
    first = probe.first_member() if probe.is_gzip else None
    return STACK if first is not None and _CHART_YAML.match(first) else None


def read(path: Path, stack: str) -> StackInfo:
    member, data = _members.scan_tar(
        path, lambda n: bool(_CHART_YAML.match(n)), gzipped=True, what="<chart>/Chart.yaml"
    )
    try:
        chart = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise refuse(path, f"{member} is not YAML ({reason})") from None
    if not isinstance(chart, dict):
        raise refuse(path, f"{member} is not a YAML mapping")
    name, version = chart.get("name"), chart.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str | int | float) or version == "":
        raise refuse(path, f"{member} has no name or no version")
    if member.split("/", 1)[0] != name:
        raise refuse(path, f"{member} names the chart {name!r}, but it lies in {member.split('/', 1)[0]}/")
    details = {k: str(chart[k]) for k in ("apiVersion", "appVersion") if chart.get(k) is not None}
    return StackInfo(
        stack=STACK, name=name, version=str(version), where=f"{member} of {path.name}", details=details
    )
