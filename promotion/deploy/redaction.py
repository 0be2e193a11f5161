"""Redaction: what of a URL or an answer may appear in a message, a log record or an exception.

A presigned URL's query string holds a signature that grants read access to the blob, and a
receiver may echo it (or the webhook secret) back in any encoding; :func:`redact_url` cuts a URL
down to what is safe to show, and :func:`scrubber` builds the function that removes the secrets
from a receiver's answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` without its query string and user info: safe for messages and logs.

    >>> redact_url("https://s3.example/b/k?X-Amz-Signature=abc&X-Amz-Expires=3600")
    'https://s3.example/b/k?[redacted]'
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "[redacted]" if parts.query else "", ""))


_SIGNATURE_RE = re.compile(
    r"(?i)((?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|awsaccesskeyid)=)[^&\s\"'\\<]+"
)


def scrubber(secrets: Iterable[str], url_parts: Iterable[str]) -> Callable[[str], str]:
    """A function removing ``secrets``, the ``url_parts`` and any URL signature from a text."""
    forms: set[str] = {s for s in secrets if s}
    for part in url_parts:
        # Also the forms a receiver may echo them in: URL-decoded, URL-encoded, JSON-escaped.
        # Short pieces ("3600") are left alone: they reveal nothing and would garble the text.
        forms.update(
            v for v in (part, unquote(part), quote(part, safe=""), part.replace("/", "\\/")) if len(v) >= 6
        )
    ordered = sorted(forms, key=len, reverse=True)

    def scrub(text: str) -> str:
        for v in ordered:
            text = text.replace(v, "[redacted]")
        return _SIGNATURE_RE.sub(r"\1[redacted]", text)

    return scrub


def url_secrets(url: str) -> list[str]:
    """The secret pieces of ``url``'s query string: the whole query, each value, each pair."""
    query = urlsplit(url).query
    return (
        [query, *(v for _, v in parse_qsl(query, keep_blank_values=True)), *query.split("&")] if query else []
    )
