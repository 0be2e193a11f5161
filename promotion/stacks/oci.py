"""OCI image layout tarballs (``oci-layout``, ``index.json``, ``blobs/sha256/...``).

The image manifest digest is recorded beside the file digest, so an image pulled from a registry
(which names it by that manifest digest) can be matched with the promoted tarball. The manifest
blob named by index.json is read back and hashed: a layout whose index points at a missing or
different manifest is refused. Only headers are walked (the tar is uncompressed, tarfile seeks
past the layers); index.json and the manifest are the only members read.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from promotion.errors import ArtifactMetadataError
from promotion.stacks import Probe, StackInfo, _members, refuse

STACK = "oci"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
#: An image manifest or image index is a few KiB; a large one is not one.
MAX_MANIFEST_BYTES = 4 * _members.MiB
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def claims(probe: Probe) -> str | None:
    if not probe.is_tar:
        return None
    try:
        tar, members = _members.tar_index(probe.path)
    except ArtifactMetadataError:
        return None  # not readable as a layout: the generic tar adapter records it as a tar
    tar.close()
    return STACK if "oci-layout" in members and "index.json" in members else None


def _json(path: Path, member: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(path, f"{member} is not JSON ({exc})") from None


def read(path: Path, stack: str) -> StackInfo:
    tar, members = _members.tar_index(path)
    with tar:
        for required in ("oci-layout", "index.json"):
            if required not in members:
                raise refuse(path, f"not an OCI image layout: no {required} member")
        layout = _json(path, "oci-layout", _members.read_tar_member(path, tar, members["oci-layout"]))
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise refuse(path, "oci-layout has no imageLayoutVersion")
        index = _json(path, "index.json", _members.read_tar_member(path, tar, members["index.json"]))
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise refuse(path, "index.json lists no manifests")
        digests: list[str] = []
        first: dict[str, Any] = {}
        for i, desc in enumerate(manifests):
            if not isinstance(desc, dict):
                raise refuse(path, f"index.json manifests[{i}] is not an object")
            digest, size = desc.get("digest"), desc.get("size")
            match = _DIGEST.match(digest) if isinstance(digest, str) else None
            if match is None or not isinstance(size, int):
                raise refuse(path, f"index.json manifests[{i}] has no sha256 digest or no size")
            blob = f"blobs/sha256/{match.group(1)}"
            if blob not in members:
                raise refuse(path, f"index.json names {digest}, but {blob} is not in the layout")
            data = _members.read_tar_member(path, tar, members[blob], cap=MAX_MANIFEST_BYTES)
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != digest or len(data) != size:
                raise refuse(
                    path, f"{blob} hashes to {actual} ({len(data)} bytes), index.json says {digest} ({size})"
                )
            digests.append(digest)
            first = first or desc
    annotations = first.get("annotations") if isinstance(first.get("annotations"), dict) else {}
    name, version = _name_version(annotations or {})
    details = {"image_manifest_digest": digests[0], "manifest_media_type": str(first.get("mediaType", ""))}
    if len(digests) > 1:
        details["image_manifest_digests"] = ",".join(digests)
    return StackInfo(
        stack=STACK, name=name, version=version, where=f"index.json of {path.name}", details=details
    )


def _name_version(annotations: dict[str, Any]) -> tuple[str | None, str | None]:
    """``repo:tag`` from containerd's full image name, else the OCI ref name (usually just a tag)."""
    full = annotations.get(CONTAINERD_NAME)
    ref = annotations.get(REF_NAME)
    for value in (full, ref):
        if isinstance(value, str) and value:
            repo, sep, tag = value.rpartition(":")
            if sep and "/" not in tag:
                return (repo or None), tag
            if value is ref:
                return None, value
    return None, None
