"""How the views write times and durations: an instant as 2026-03-02T09:05:00Z (or in the
display zone, 2026-03-02T17:05:00+08:00), a span as "850 ms", "42.0 s", "4m 0s", "2h 5m 0s"
or "3d 4h 5m". (Money and account numbers: hub/domain/wording.py.)

The display zone is the process's, set once by the command line (`--tz`); times are stored
and signed in UTC whatever it is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_zone: tzinfo = UTC


def set_display_zone(zone: tzinfo) -> None:
    """The zone every view writes instants in, from now on."""
    global _zone
    _zone = zone


def display_zone() -> tzinfo:
    return _zone


def duration(delta: timedelta | None) -> str:
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
