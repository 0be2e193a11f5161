"""Java JARs and WARs: Maven coordinates from ``META-INF/maven/<group>/<artifact>/pom.properties``,
else name and version from ``META-INF/MANIFEST.MF``.

A shaded ("uber") JAR carries the pom.properties of every library it swallowed: then the one
whose ``artifactId-version`` is the file name's stem is the JAR's own, and without one the
manifest speaks. A JAR that says neither is still a ``jar``, with no name or version.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from promotion.stacks import Probe, StackInfo, _members, refuse

STACKS = ("jar", "war")
MANIFEST = "META-INF/MANIFEST.MF"
_POM = re.compile(r"^META-INF/maven/([^/]+)/([^/]+)/pom\.properties$")
#: Manifest attributes naming the artifact, in order of preference.
_NAME_VERSION = (
    ("Implementation-Title", "Implementation-Version"),
    ("Bundle-SymbolicName", "Bundle-Version"),
    ("Specification-Title", "Specification-Version"),
)


def claims(probe: Probe) -> str | None:
    if not probe.is_zip:
        return None
    suffix = probe.name.rsplit(".", 1)[-1].lower()
    if suffix in ("war", "jar", "ear"):
        return "war" if suffix == "war" else "jar"
    try:
        with zipfile.ZipFile(probe.path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return None
    if MANIFEST not in names:
        return None
    return "war" if any(n.startswith("WEB-INF/") for n in names) else "jar"


def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties``: ``key=value``, ``key: value`` or ``key value``; # and ! comments."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def parse_manifest(text: str) -> dict[str, str]:
    """The main section of a JAR manifest; a line starting with one space continues the previous."""
    values: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line:
            break  # the main section ends at the first blank line; per-entry sections follow
        if line.startswith(" ") and last is not None:
            values[last] += line[1:]
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            values[last] = value.strip()
    return values


def read(path: Path, stack: str) -> StackInfo:
    with _members.open_zip(path) as zf:
        names = _members.zip_names(path, zf)
        poms = [n for n in names if _POM.match(n)]
        stem = path.name.rsplit(".", 1)[0]
        chosen: tuple[str, dict[str, str]] | None = None
        for member in poms:
            props = parse_properties(_text(path, member, _members.read_zip_member(path, zf, member)))
            own = len(poms) == 1 or f"{props.get('artifactId')}-{props.get('version')}" == stem
            if own and props.get("artifactId") and props.get("version"):
                chosen = (member, props)
                break
        if chosen is not None:
            member, props = chosen
            group = props.get("groupId", "")
            return StackInfo(
                stack=stack,
                name=f"{group}:{props['artifactId']}" if group else props["artifactId"],
                version=props["version"],
                where=f"{member} of {path.name}",
                details={"maven_coordinates": f"{group}:{props['artifactId']}:{props['version']}"},
            )
        if MANIFEST not in names:
            if poms or path.suffix.lower() in (".jar", ".war", ".ear"):
                return StackInfo(stack=stack)
            raise refuse(path, f"not a {stack}: no {MANIFEST} and no META-INF/maven/**/pom.properties")
        attrs = parse_manifest(_text(path, MANIFEST, _members.read_zip_member(path, zf, MANIFEST)))
    for name_key, version_key in _NAME_VERSION:
        if attrs.get(version_key):
            name = attrs.get(name_key, "").split(";", 1)[0] or None  # Bundle-SymbolicName: x;singleton:=true
            return StackInfo(
                stack=stack,
                name=name,
                version=attrs[version_key],
                where=f"{MANIFEST} ({version_key}) of {path.name}",
            )
    return StackInfo(stack=stack)


def _text(path: Path, member: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # pom.properties is ISO-8859-1 by the .properties spec; Maven writes ASCII.
        return data.decode("latin-1")
