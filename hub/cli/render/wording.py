"""How the views write times and durations: an instant as 2026-03-02T09:05:00Z, a span as
"850 ms", "42.0 s", "4m 0s", "2h 5m 0s" or "3d 4h 5m". (Money and account numbers:
hub/domain/wording.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


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
    """A UTC instant to the second, as 2026-03-02T09:05:00Z; "" for none."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
