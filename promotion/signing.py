"""Every HMAC signature the product makes or checks: one implementation for both directions.

Two schemes, each written once here and used by the deploy webhook (outgoing,
:mod:`promotion.deploy`), the CI webhook receiver (incoming, :mod:`promotion.webhook`) and the
demo (``scripts/demo.py``, which signs as CI would):

GitHub style (``X-Hub-Signature-256`` incoming, ``X-Promotion-Signature-256`` outgoing)
    ``sha256=<hex HMAC-SHA256 of the raw body>``, keyed with the secret's UTF-8 bytes exactly as
    configured (a ``whsec_`` prefix included), which is what GitHub and GitHub-style verifiers do.
`Standard Webhooks <https://www.standardwebhooks.com/>`_
    ``webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">``,
    a space-separated list of which one matching ``v1`` entry is enough. The key is the secret
    base64-decoded after an optional ``whsec_`` prefix, as the spec and its reference libraries
    do; a secret that is not base64 is refused (:class:`~promotion.errors.SigningSecretInvalid`)
    rather than used some other way, because no reference verifier could check what it signs.
    Unpadded base64 is accepted, as the reference libraries accept it.

Both schemes are checked against the published test vectors in
``../shared/fixtures/webhooks/signature-test-vectors.json`` (``tests/promotion/test_signing.py``).
The PyPI package ``standardwebhooks`` implements the same scheme but signs ``str`` rather than
bytes, reads the clock itself, decodes secrets leniently (characters outside the base64 alphabet
are dropped, so a mistyped secret becomes another key) and raises one error for missing, bad and
stale signatures; the receiver needs bytes, an injectable clock and distinct 401 causes, so the
dozen lines are written here instead.

This module only computes and compares: what a mismatch means (the receiver's 401 answers, the
deploy's errors) is decided by its callers. Comparisons are constant-time, and nothing here logs
or puts a secret into a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from promotion.errors import SigningSecretInvalid

#: The prefix that marks a Standard Webhooks secret (``whsec_<base64 of the key>``).
WHSEC_PREFIX = "whsec_"
#: The only signature version the Standard Webhooks spec defines for symmetric keys.
STANDARD_WEBHOOKS_VERSION = "v1"


def header_bytes(value: str) -> bytes:
    """The bytes of a header value as they came off the wire.

    Starlette (like http.client) decodes header bytes as latin-1, so encoding back to latin-1 gives
    the original bytes; :func:`hmac.compare_digest` then never sees a non-ASCII ``str`` (it raises
    ``TypeError`` on those, which would turn a bad signature into a 500).
    """
    return value.encode("latin-1", errors="replace")


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """The raw HMAC-SHA256 of ``data`` under ``key``."""
    return hmac.new(key, data, hashlib.sha256).digest()


def secrets_match(expected: str | bytes, given: str) -> bool:
    """Whether header value ``given`` equals ``expected``, compared in constant time."""
    want = expected if isinstance(expected, bytes) else expected.encode("utf-8")
    return hmac.compare_digest(want, header_bytes(given))


# --- GitHub style -------------------------------------------------------------------------------


def github_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>`` keyed with the UTF-8 bytes of ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def github_signature_matches(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` (surrounding whitespace ignored) is the GitHub-style signature of ``body``."""
    return secrets_match(github_signature(secret, body), header.strip())


# --- Standard Webhooks --------------------------------------------------------------------------


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64-decoded after an optional ``whsec_``.

    Surrounding whitespace is ignored (a secret read from a file often ends with a newline).
    Raises :class:`~promotion.errors.SigningSecretInvalid`, whose message never contains the
    secret, when the rest is not base64 or decodes to nothing.
    """
    text = secret.strip().removeprefix(WHSEC_PREFIX)
    try:
        # validate=True: a character outside the alphabet is an error, not silently dropped.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SigningSecretInvalid(
            "the Standard Webhooks secret is not whsec_<base64>: after the optional 'whsec_' prefix "
            "it must be standard base64 (A-Z a-z 0-9 + /, '=' padding); generate one as 'whsec_' + "
            "base64 of 24 or more random bytes"
        ) from None
    if not key:
        raise SigningSecretInvalid(
            "the Standard Webhooks secret is empty: set it to 'whsec_' + base64 of 24 or more random bytes"
        )
    return key


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`` under ``key``.

    ``key`` is already decoded (see :func:`standard_webhooks_key`); ``msg_id`` is signed as the
    bytes its header carries (:func:`header_bytes`), identical to UTF-8 for the ASCII ids senders use.
    """
    signed = header_bytes(msg_id) + b"." + str(timestamp).encode("ascii") + b"." + body
    return f"{STANDARD_WEBHOOKS_VERSION}," + base64.b64encode(hmac_sha256(key, signed)).decode("ascii")


def standard_webhooks_signature_matches(
    key: bytes, msg_id: str, timestamp: int, body: bytes, header: str
) -> bool:
    """Whether one entry of the space-separated ``webhook-signature`` list signs this message.

    Entries of other versions (``v1a,...`` asymmetric, a future ``v2,...``) never match; every entry
    is compared, each in constant time.
    """
    expected = standard_webhooks_signature(key, msg_id, timestamp, body).encode("ascii")
    # No short-circuit: the time taken does not say which entry matched.
    matched = [hmac.compare_digest(expected, header_bytes(entry)) for entry in header.split(" ") if entry]
    return any(matched)
