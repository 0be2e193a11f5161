"""Where a digest has been, from the ledger's history: the basis of "where does a run start".

The current state says what each environment runs *now*; it cannot say that a digest passed dev
and was then replaced there by a newer build. That is history, so it is read from the records:
backwards from the tip to the digest's ``published`` record (nothing before it can concern the
digest), in growing batches. A fresh build is a few records back, so this costs a few requests.

A digest has *reached* an environment when it was promoted (or restored) there and not rolled
back out of it afterwards. Being replaced by a newer build does not undo that: the digest passed
that stage, and a promotion further up starts after it (as Kargo's "verified in" does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from promotion.digest import Digest
from promotion.ledger import Ledger, Tip
from promotion.models import EnvState, LedgerRecord

#: The first batch read backwards from the tip; each further batch doubles, up to the maximum.
FIRST_BATCH = 8
MAX_BATCH = 128


@dataclass(frozen=True)
class Stay:
    """One stay of the digest in an environment: since when, and until when (None: still there)."""

    environment: str
    since: dt.datetime
    until: dt.datetime | None
    by: str
    seq: int
    version: str | None
    replaced_by: Digest | None = None

    def as_env_state(self, digest: Digest) -> EnvState:
        return EnvState(digest=digest, version=self.version, since=self.since, by=self.by, seq=self.seq)


@dataclass
class DigestHistory:
    """What the ledger says a digest did since it was published."""

    digest: Digest
    #: Sequence number of its ``published`` record (None: not found, e.g. a ledger begun later).
    published_seq: int | None = None
    #: The latest stay per environment that was not rolled back out.
    stays: dict[str, Stay] = field(default_factory=dict)
    #: Environments the digest was rolled back out of (and not promoted to again since).
    rolled_back_from: set[str] = field(default_factory=set)
    #: Digests published after this one (within the records read), i.e. newer builds.
    newer: set[str] = field(default_factory=set)

    def reached(self, environment: str) -> bool:
        return environment in self.stays

    def furthest(self, names: Sequence[str]) -> str | None:
        """The furthest environment, in pipeline order, that the digest reached."""
        reached = [n for n in names if n in self.stays]
        return reached[-1] if reached else None

    def is_newer(self, other: Digest) -> bool:
        """Whether ``other`` was published after this digest (a newer build)."""
        return str(other) in self.newer


def fold(history: DigestHistory, rec: LedgerRecord) -> None:
    """Apply one record (in chronological order) to the digest's history, in place."""
    d = history.digest
    if rec.event == "published":
        if rec.digest == d:
            history.published_seq = rec.seq
        else:
            history.newer.add(str(rec.digest))
        return
    env = rec.environment
    if env is None or rec.event not in ("promoted", "rolled_back"):
        return
    mine = history.stays.get(env)
    if rec.digest == d:
        # Promoted or restored here: a new stay begins.
        history.stays[env] = Stay(env, rec.at, None, rec.actor, rec.seq, rec.version)
        history.rolled_back_from.discard(env)
        return
    if rec.event == "rolled_back" and str(rec.details.get("from", "")) == str(d):
        # Rolled back out of this environment: it no longer counts as having passed it.
        history.stays.pop(env, None)
        history.rolled_back_from.add(env)
        return
    if mine is not None and mine.until is None:
        history.stays[env] = Stay(
            env, mine.since, rec.at, mine.by, mine.seq, mine.version, replaced_by=rec.digest
        )


def digest_history(ledger: Ledger, service: str, digest: Digest, tip: Tip | None = None) -> DigestHistory:
    """The digest's history in ``service``'s ledger, read backwards from the tip to its publish."""
    tip = tip or ledger.tip(service)
    collected: list[LedgerRecord] = []
    if tip.record is not None:
        collected.append(tip.record)
    last = tip.seq - 1
    batch = FIRST_BATCH
    found = tip.record is not None and tip.record.event == "published" and tip.record.digest == digest
    while not found and last >= 1:
        first = max(1, last - batch + 1)
        records = ledger.read_range(service, first, last)
        collected.extend(reversed(records))
        found = any(r.event == "published" and r.digest == digest for r in records)
        last = first - 1
        batch = min(MAX_BATCH, batch * 2)
    history = DigestHistory(digest)
    chronological = sorted(collected, key=lambda r: r.seq)
    start = 0
    for i, rec in enumerate(chronological):
        if rec.event == "published" and rec.digest == digest:
            start = i  # the latest publish of the digest: only what follows can concern it
    for rec in chronological[start:]:
        fold(history, rec)
    return history
