"""The console's configuration file (console.toml): where its identity and database are, how
it listens, how long sessions and proposals live, and which actions need a second person."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Actions a console can take at the hub. Every one is one signed message.
ACTIONS: tuple[str, ...] = (
    "report",  # a bank files a victim's report
    "verify",  # the reporting bank confirms or rejects it
    "answer",  # an addressee answers an order
    "stop",
    "freeze",
    "release",
    "return",
    "auto_stop_rule",
    "list_publish",
    "list_remove",
    "appeal_file",
    "appeal_decide",
    "distribution_start",
    "distribution_object",
    "distribution_decide",
    "acknowledge",
    "case_grade",  # the centre regrades a case (docs/grades.md)
    "warning_send",  # the centre warns the member keeping an account (docs/warnings.md)
    "warning_acknowledge",
    "warning_outcome",
    "warning_grade",
    "lead_submit",  # a member hands the centre a lead (docs/leads.md)
    "lead_answer",
    "lead_ask",
    "lead_dismiss",
    "lead_list_account",
    "lead_open_case",
    "lead_warn_member",
    "lead_grade",
)

# What needs a second person (a supervisor who is not the maker) unless console.toml says
# otherwise. A stop does not: its 10-minute clock comes first.
DEFAULT_APPROVAL: frozenset[str] = frozenset(
    {
        "freeze",
        "release",
        "return",
        "auto_stop_rule",
        "list_publish",
        "list_remove",
        # Accepting a lead by listing an account publishes a list entry, as list_publish.
        "lead_list_account",
        "appeal_decide",
        "distribution_start",
        "distribution_decide",
    }
)


class ConfigError(Exception):
    """A console.toml that cannot be used, in one line."""


@dataclass(frozen=True)
class ConsoleConfig:
    path: Path
    identity: Path
    database_url: str
    hub: str | None = None
    host: str = "127.0.0.1"
    port: int = 8470
    # HTTPS with this certificate and key; then cookies are Secure.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    idle_timeout: timedelta = timedelta(minutes=15)
    lockout_after: int = 5
    lockout_for: timedelta = timedelta(minutes=15)
    # Everyone signs in with a second factor: a person without one sets it up first.
    require_totp: bool = False
    proposal_ttl: timedelta = timedelta(minutes=30)
    approval: frozenset[str] = DEFAULT_APPROVAL
    language: str = "zh"
    # The zone times are shown in (docs: the policy's [display] time_zone).
    time_zone: str = "Asia/Shanghai"
    # The browser says a console is behind a TLS-terminating proxy with this.
    secure_cookies: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def https(self) -> bool:
        return self.tls_cert is not None or self.secure_cookies


def _minutes(table: dict[str, Any], key: str, default: timedelta) -> timedelta:
    value = table.get(key)
    if value is None:
        return default
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key} must be a positive number of minutes, not {value!r}")
    return timedelta(minutes=float(value))


def _zone(file: Path, name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(
            f'{file}: time_zone is an IANA zone such as "Asia/Shanghai", not {name!r}'
        ) from err
    return name


def load_config(path: str | Path) -> ConsoleConfig:
    """console.toml; relative paths in it are relative to its folder."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"{file}: no console configuration here; make one with `stophub console init`"
        ) from err
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{file}: cannot read it: {err}") from err
    base = file.parent

    def place(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    try:
        identity = place(str(data["identity"]))
    except KeyError as err:
        raise ConfigError(
            f"{file}: say where the institution's identity is (identity = DIR)"
        ) from err
    database_url = str(data.get("database_url") or f"sqlite:///{base / 'console.db'}")
    sessions = data.get("sessions", {})
    approvals = data.get("approval", {})
    unknown = set(approvals) - set(ACTIONS)
    if unknown:
        raise ConfigError(
            f"{file}: [approval] names no such action: {', '.join(sorted(unknown))} "
            f"(actions: {', '.join(ACTIONS)})"
        )
    approval = {a for a in ACTIONS if approvals.get(a, a in DEFAULT_APPROVAL)}
    language = str(data.get("language", "zh"))
    if language not in ("zh", "en"):
        raise ConfigError(f'{file}: language is "zh" or "en", not {language!r}')
    tls_cert = place(str(data["tls_cert"])) if data.get("tls_cert") else None
    tls_key = place(str(data["tls_key"])) if data.get("tls_key") else None
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError(f"{file}: give both tls_cert and tls_key, or neither")
    try:
        return ConsoleConfig(
            path=file,
            identity=identity,
            database_url=database_url,
            hub=str(data["hub"]) if data.get("hub") else None,
            host=str(data.get("host", "127.0.0.1")),
            port=int(data.get("port", 8470)),
            tls_cert=tls_cert,
            tls_key=tls_key,
            idle_timeout=_minutes(sessions, "idle_minutes", timedelta(minutes=15)),
            lockout_after=int(sessions.get("lockout_after", 5)),
            lockout_for=_minutes(sessions, "lockout_minutes", timedelta(minutes=15)),
            require_totp=_flag(file, sessions, "require_totp"),
            proposal_ttl=_minutes(data, "proposal_minutes", timedelta(minutes=30)),
            approval=frozenset(approval),
            language=language,
            time_zone=_zone(file, str(data.get("time_zone", "Asia/Shanghai"))),
            secure_cookies=bool(data.get("secure_cookies", False)),
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{file}: {err}") from err


def _flag(file: Path, table: dict[str, Any], name: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{file}: {name} is true or false, not {value!r}")
    return value


def write_config(
    path: str | Path,
    identity: str | Path,
    *,
    hub: str | None = None,
    port: int = 8470,
    database_url: str | None = None,
    language: str = "zh",
) -> ConsoleConfig:
    """A new console.toml with the defaults spelled out, so an operator sees what to change."""
    file = Path(path)
    if file.exists():
        raise ConfigError(f"{file}: already exists; edit it instead")
    file.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# stophub console: docs/console.md explains every setting.",
        f'identity = "{identity}"',
        *([f'hub = "{hub}"'] if hub else []),
        *([f'database_url = "{database_url}"'] if database_url else []),
        'host = "127.0.0.1"',
        f"port = {port}",
        f'language = "{language}"',
        'time_zone = "Asia/Shanghai"',
        '# tls_cert = "console.pem"   # serve HTTPS (cookies are then Secure)',
        '# tls_key = "console.key"',
        "proposal_minutes = 30",
        "",
        "[sessions]",
        "idle_minutes = 15",
        "lockout_after = 5",
        "lockout_minutes = 15",
        "# true: everyone signs in with an authenticator code; set it up at /account",
        "require_totp = false",
        "",
        "# true: a supervisor who is not the maker must approve it first.",
        "[approval]",
        *(f"{a} = {'true' if a in DEFAULT_APPROVAL else 'false'}" for a in ACTIONS),
    ]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(file)
