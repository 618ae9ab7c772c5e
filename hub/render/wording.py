"""How the views write times and durations: an instant as 2026-03-02T09:05:00Z (or in the
display zone, 2026-03-02T17:05:00+08:00), a set of instants together (`Times`: a table's
column, a timeline, a picture's labels), a span as "850 ms", "42.0 s", "4m 0s", "2h 5m 0s"
or "3d 4h 5m". (Money, account numbers and names: hub/domain/wording.py.)

The display zone is the process's, set once by the command line (`--tz`); times are stored,
signed and exported in UTC whatever it is. Every time a view writes says its zone: in the
time itself (`stamp`) or in the header above it (`Times.header`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal

_zone: tzinfo = UTC


def set_display_zone(zone: tzinfo) -> None:
    """The zone every view writes instants in, from now on."""
    global _zone
    _zone = zone


def display_zone() -> tzinfo:
    return _zone


def duration(delta: timedelta | None) -> str:
    """A span, signed: "-26.2 s" for a negative one. A view that writes how late or how long
    ago something was writes the span it means, positive, with its words ("26.2 s overdue",
    "due 3m 0s ago"): a reader does not parse a minus."""
    if delta is None:
        return "—"
    total = delta.total_seconds()
    if total < 0:
        return "-" + duration(-delta)
    if total < 1:
        return f"{total * 1000:.0f} ms"
    if total < 120:
        return f"{total:.1f} s"
    minutes, seconds = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    return f"{minutes}m {seconds}s"


def stamp(moment: datetime | None) -> str:
    """An instant to the second in the display zone, as 2026-03-02T09:05:00Z in UTC or
    2026-03-02T17:05:00+08:00 elsewhere; "" for none."""
    if moment is None:
        return ""
    return moment.astimezone(_zone).isoformat(timespec="seconds").replace("+00:00", "Z")


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")  # +0800
    return "Z" if text == "+0000" else f"{text[:3]}:{text[3:]}"


def zone_name(at: datetime | None = None) -> str:
    """The display zone as a header names it: "UTC", "UTC+08:00", or "Asia/Shanghai
    (UTC+08:00)" (the offset as it is at `at`, when given)."""
    key = getattr(_zone, "key", None)
    if _zone is UTC or key in ("UTC", "Etc/UTC"):
        return "UTC"
    offset = ""
    if at is not None:
        offset = "UTC" + at.astimezone(_zone).strftime("%z")
        offset = f"{offset[:6]}:{offset[6:]}"
    elif key is None:
        offset = _zone.tzname(None) or ""
    if key is None:
        return offset or str(_zone)
    return f"{key} ({offset})" if offset else key


Unit = Literal["minutes", "seconds", "milliseconds"]
_CLOCK = {"minutes": "%H:%M", "seconds": "%H:%M:%S", "milliseconds": "%H:%M:%S.%f"}


class Times:
    """Instants written together in the display zone: the time of day alone while they all
    fall on one day there (the day goes in the header), with the date as soon as they cross
    one, so a 30-day timeline never reads as one day. `dated` writes the date always;
    `short_dates` writes it as 03-01 while they all fall in one year (labels in a picture).
    Each time carries its offset only when the zone's offset changes among them (summer
    time); otherwise the header names the zone once."""

    def __init__(
        self,
        moments: Iterable[datetime | None],
        *,
        unit: Unit = "seconds",
        dated: bool = False,
        short_dates: bool = False,
    ) -> None:
        local = [m.astimezone(_zone) for m in moments if m is not None]
        days = {m.date() for m in local}
        self.day: date | None = next(iter(days)) if len(days) == 1 and not dated else None
        self.first = local[0] if local else None
        one_year = len({d.year for d in days}) <= 1
        self._offset_each = len({m.utcoffset() for m in local}) > 1
        self._unit = unit
        self._date = "" if len(days) <= 1 and not dated else "%Y-%m-%d "
        if self._date and short_dates and one_year:
            self._date = "%m-%d "

    def __call__(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        local = moment.astimezone(_zone)
        text = local.strftime(self._date + _CLOCK[self._unit])
        if self._unit == "milliseconds":
            text = text[:-3]
        return text + _offset(local) if self._offset_each else text

    @property
    def zone(self) -> str:
        """The zone the times are in, as a header names it ("local times" when they carry
        their own offsets)."""
        return "offsets given" if self._offset_each else zone_name(self.first)

    def header(self, title: str, *, day: bool = True) -> str:
        """`title` with the zone, and the day when there is one: "time (2026-03-02, UTC)";
        without `day` where the view names the day already."""
        on = f"{self.day.isoformat()}, " if self.day is not None and day else ""
        return f"{title} ({on}{self.zone})"
