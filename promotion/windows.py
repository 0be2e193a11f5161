"""The weekly window calendar: when a window gate's freezes and allow windows hold, DST included.

A :class:`~promotion.config.Window` is a weekly span of wall-clock time in a time zone
(``fri 16:00 → mon 08:00 Europe/Berlin``). Each occurrence is resolved on its own date, so a
window keeps its wall-clock times across DST changes (:func:`_at_wall` says how the skipped and
repeated hours are resolved). :class:`Schedule` answers what the window gate asks (blocked now?
when does it open, when does it close?); :func:`next_opening` is what the plan and the stage
flow use to say when a window gate will pass. The gate's verdict itself is
:func:`promotion.gates.evaluate_window`.

Pure: no clock is read here, the moment is always an argument.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from promotion.config import Window, WindowGate

#: How far ahead :func:`next_opening` looks. Windows repeat weekly, so if nothing opens within a
#: week (plus slack for DST shifts) nothing ever will.
OPENING_HORIZON = dt.timedelta(days=14)


def utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already."""
    # Naive datetimes are taken as UTC: everything this product stores is UTC.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def label(window: Window) -> str:
    """How a window is named in a gate's reasons: ``fri 16:00 → mon 08:00 Europe/Berlin``."""
    return f"{window.start_day} {window.start} → {window.end_day} {window.end} {window.timezone}"


def _at_wall(wall: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The first instant at which the clocks in ``tz`` show ``wall`` or later.

    Weekly windows are wall-clock times, so DST is handled by resolving each occurrence on its
    own date. In the repeated hour of a fall-back night the first occurrence is taken; a time in
    the skipped hour of a spring-forward night resolves to the moment the clock jumps over it.
    """
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    a, b = sorted((first.astimezone(dt.UTC), second.astimezone(dt.UTC)))
    # Through UTC: astimezone() to the datetime's own zone returns it unchanged.
    if a.astimezone(tz).replace(tzinfo=None) == wall:
        return a.astimezone(tz)
    # Skipped time: bisect (to the second) for the transition between the two readings.
    lo, hi = int(a.timestamp()), math.ceil(b.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, tz)


def _occurrences(window: Window, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) instants of the window's weekly occurrences around ``now``.

    From the week before ``now`` (a window may wrap into this week) to well past
    :data:`OPENING_HORIZON`.
    """
    tz = ZoneInfo(window.timezone)
    local = now.astimezone(tz)
    monday = local.date() - dt.timedelta(days=local.weekday())
    h1, m1 = (int(x) for x in window.start.split(":"))
    h2, m2 = (int(x) for x in window.end.split(":"))
    spans = []
    for week in range(-1, OPENING_HORIZON.days // 7 + 2):
        base = monday + dt.timedelta(weeks=week)
        start_day = base + dt.timedelta(days=_WEEKDAYS[window.start_day])
        end_day = base + dt.timedelta(days=_WEEKDAYS[window.end_day])
        start = dt.datetime.combine(start_day, dt.time(h1, m1))
        end = dt.datetime.combine(end_day, dt.time(h2, m2))
        # An end at or before the start wraps into the next week (fri 16:00 → mon 08:00); equal
        # start and end make a window that spans the whole week.
        if end <= start:
            end += dt.timedelta(days=7)
        spans.append((_at_wall(start, tz), _at_wall(end, tz)))
    return spans


def inside(spans: Iterable[tuple[dt.datetime, dt.datetime]], moment: dt.datetime) -> bool:
    """Whether ``moment`` falls in one of the [start, end) ``spans``."""
    return any(start <= moment < end for start, end in spans)


class Schedule:
    """The occurrences of a gate's windows around one moment, and questions about them."""

    def __init__(self, gate: WindowGate, now: dt.datetime) -> None:
        self.deny = [(w, _occurrences(w, now)) for w in gate.deny]
        self.allow = [(w, _occurrences(w, now)) for w in gate.allow]

    def denying(self, moment: dt.datetime) -> list[Window]:
        return [w for w, spans in self.deny if inside(spans, moment)]

    def outside_allow(self, moment: dt.datetime) -> bool:
        return bool(self.allow) and not any(inside(spans, moment) for _, spans in self.allow)

    def blocked(self, moment: dt.datetime) -> bool:
        return bool(self.denying(moment)) or self.outside_allow(moment)

    def first(
        self, now: dt.datetime, candidates: list[tuple[dt.datetime, Window]], want_blocked: bool
    ) -> dt.datetime | None:
        limit = now + OPENING_HORIZON
        for moment, window in sorted((c for c in candidates if now < c[0] <= limit), key=lambda c: c[0]):
            if self.blocked(moment) == want_blocked:
                return moment.astimezone(ZoneInfo(window.timezone))
        return None

    def opening(self, now: dt.datetime) -> dt.datetime | None:
        # Promotion can only become possible where a freeze ends or an allow window starts.
        candidates = [(end, w) for w, spans in self.deny for _, end in spans]
        candidates += [(start, w) for w, spans in self.allow for start, _ in spans]
        return self.first(now, candidates, want_blocked=False)

    def closing(self, now: dt.datetime) -> dt.datetime | None:
        candidates = [(start, w) for w, spans in self.deny for start, _ in spans]
        candidates += [(end, w) for w, spans in self.allow for _, end in spans]
        return self.first(now, candidates, want_blocked=True)


def next_opening(gate: WindowGate, now: dt.datetime) -> dt.datetime | None:
    """The earliest moment at or after ``now`` at which the gate's windows allow promotion.

    ``now`` itself when promotion is allowed now; None when nothing opens within
    :data:`OPENING_HORIZON` (the windows never allow promotion). The moment is expressed in the
    time zone of the window whose boundary it is.
    """
    now = utc(now)
    schedule = Schedule(gate, now)
    return now if not schedule.blocked(now) else schedule.opening(now)
