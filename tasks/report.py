"""Where Prefect users look: markdown/table artifacts and events. Never given secrets."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from promotion.digest import Digest


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def markdown(key: str, text: str, description: str) -> None:
    create_markdown_artifact(markdown=text, key=key, description=description)


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(table=rows, key=key, description=description)


def event(
    name: str,
    *,
    service: str,
    environment: str | None,
    digest: Digest,
    payload: dict[str, Any] | None = None,
) -> None:
    """Emit ``promotion.<name>`` about a service/environment, with the digest as a related resource."""
    resource = {
        "prefect.resource.id": f"promotion.{service}.{environment or 'all'}",
        "prefect.resource.name": f"{service} {environment or ''}".strip(),
        "promotion.service": service,
        "promotion.environment": environment or "",
        "promotion.digest": str(digest),
    }
    related = [
        {"prefect.resource.id": f"promotion.service.{service}", "prefect.resource.role": "service"},
        {"prefect.resource.id": f"promotion.digest.{digest}", "prefect.resource.role": "artifact"},
    ]
    if environment:
        related.append(
            {
                "prefect.resource.id": f"promotion.environment.{environment}",
                "prefect.resource.role": "environment",
            }
        )
    emit_event(event=f"promotion.{name}", resource=resource, related=related, payload=payload or {})
