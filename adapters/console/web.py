"""What every page of the console shares: the desk (its state), who is signed in, the CSRF
check on every form, roles, and rendering in the person's language with the hub's link state
and the SLA countdowns on every screen."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import select, update
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from adapters.console.config import ConsoleConfig
from adapters.console.db import ConsoleDb
from adapters.console.hublink import HubLink
from adapters.console.i18n import LANGUAGES, NAMES, translations
from adapters.console.live import Broadcaster, Event
from adapters.console.models import Person, Session
from adapters.console.people import Role
from adapters.sdk.client import Clock
from hub.domain.wording import yuan
from hub.service.slareport import clock_name

TEMPLATES = Path(__file__).with_name("templates")
# Cookies are named after the console's institution: browsers keep cookies per host, not per
# port, so two consoles on one host (the demo's) would otherwise sign each other out.
COOKIE = "stophub_console_{}"
LOGIN_CSRF_COOKIE = "stophub_console_{}_login"
# The language chosen on the sign-in page, before anyone is signed in.
LANGUAGE_COOKIE = "stophub_console_{}_language"


def cookie(request: Request, pattern: str) -> str:
    """This console's name for one of its cookies."""
    return pattern.format(desk_of(request).institution.lower())


Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Viewer:
    """The person signed in for this request."""

    id: int
    username: str
    display_name: str
    role: str
    language: str
    csrf: str
    must_change_password: bool
    has_totp: bool = False

    @property
    def can_act(self) -> bool:
        return self.role in (Role.OFFICER, Role.SUPERVISOR)

    @property
    def supervisor(self) -> bool:
        return self.role == Role.SUPERVISOR


@dataclass
class Desk:
    """The console's state, one per process: configuration, database, hub link, clock."""

    config: ConsoleConfig
    db: ConsoleDb
    link: HubLink
    clock: Clock
    broadcaster: Broadcaster
    institution: str
    # anti_fraud_centre | bank | payment_institution | regulator | auditor (from the hub's
    # registry at start: what this institution is decides which desk it gets)
    kind: str = ""
    institution_name: str = ""
    envs: dict[str, Environment] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.time_zone)

    @property
    def member(self) -> bool:
        return self.kind in ("bank", "payment_institution")

    @property
    def centre(self) -> bool:
        return self.kind == "anti_fraud_centre"

    @property
    def oversight(self) -> bool:
        return self.kind in ("regulator", "auditor")

    def env(self, language: str) -> Environment:
        if language not in self.envs:
            env = Environment(
                loader=FileSystemLoader(TEMPLATES),
                autoescape=select_autoescape(["html", "svg"]),
                extensions=["jinja2.ext.i18n"],
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
            env.filters["yuan"] = lambda fen: yuan(int(fen or 0))
            env.filters["local"] = self.local_time
            env.filters["iso"] = lambda t: t.isoformat() if t else ""
            # A clock kind as people say it ("stop answer", not `stop`), then translated.
            env.filters["clock"] = clock_name
            self.envs[language] = env
        return self.envs[language]

    def notify(self, kind: str, title: str, url: str = "", case_id: str = "") -> None:
        self.broadcaster.publish(Event(kind, title, case_id=case_id, url=url))

    def local_time(self, moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return moment.astimezone(self.zone).strftime(fmt) if moment else "—"


def desk_of(request: Request) -> Desk:
    desk = request.app.state.desk
    assert isinstance(desk, Desk)
    return desk


def gettext_for(request: Request) -> Callable[[str], str]:
    viewer = getattr(request.state, "viewer", None)
    language = (
        viewer.language if viewer else request.cookies.get(cookie(request, LANGUAGE_COOKIE), "")
    )
    if language not in LANGUAGES:
        language = desk_of(request).config.language
    return translations(language).gettext


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    desk = desk_of(request)
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    language = (
        viewer.language
        if viewer
        else request.query_params.get("lang")
        or request.cookies.get(cookie(request, LANGUAGE_COOKIE), "")
    )
    if language not in LANGUAGES:
        language = desk.config.language
    now = desk.clock.now()
    values: dict[str, Any] = {
        "request": request,
        "desk": desk,
        "viewer": viewer,
        "language": language,
        "languages": NAMES,
        "now": now,
        "link": desk.link.state,
        "csrf": viewer.csrf if viewer else "",
        "path": request.url.path,
    }
    values.update(context or {})
    html = desk.env(language).get_template(template).render(values)
    return HTMLResponse(html, status_code=status, headers=dict(headers or {}))


def refuse(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "refused.html", {"message": message}, status=status)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(request: Request, person: Person, response: Response) -> None:
    desk = desk_of(request)
    token = secrets.token_urlsafe(32)
    now = desk.clock.now()
    with desk.db() as s:
        s.add(
            Session(
                token_hash=hash_token(token),
                person_id=person.id,
                csrf=secrets.token_urlsafe(32),
                created_at=now,
                last_seen=now,
                ended=False,
            )
        )
    set_cookie(request, response, cookie(request, COOKIE), token)


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=desk_of(request).config.https,
        path="/",
    )


def current_viewer(request: Request, *, touch: bool = True) -> tuple[Viewer | None, str]:
    """The signed-in person and '' or None and why not ('none', 'expired', 'disabled')."""
    desk = desk_of(request)
    token = request.cookies.get(cookie(request, COOKIE))
    if not token:
        return None, "none"
    now = desk.clock.now()
    with desk.db() as s:
        row = s.get(Session, hash_token(token))
        if row is None or row.ended:
            return None, "none"
        if now - row.last_seen > desk.config.idle_timeout:
            # Left as it is (not marked ended): whatever asks first after the timeout (the
            # live stream reconnecting, a live refresh), the person's next click still learns
            # that the session expired, not only that there is none.
            return None, "expired"
        person = s.get(Person, row.person_id)
        if person is None or person.disabled:
            row.ended = True
            return None, "disabled"
        if touch:
            row.last_seen = now
        return (
            Viewer(
                person.id,
                person.username,
                person.display_name,
                person.role,
                person.language,
                row.csrf,
                person.must_change_password,
                bool(person.totp_secret),
            ),
            "",
        )


def end_sessions(desk: Desk, person_id: int) -> None:
    with desk.db() as s:
        s.execute(update(Session).where(Session.person_id == person_id).values(ended=True))


def csrf_ok(form: FormData, expected: str) -> bool:
    given = form.get("csrf")
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, expected)


# What a person without the second factor may open where the console requires one.
ACCOUNT_PAGES = frozenset({"/account", "/account/two-factor", "/password", "/logout", "/language"})


def page(*, act: bool = False, supervise: bool = False) -> Callable[[Endpoint], Endpoint]:
    """A page for signed-in people: GET needs a session; POST also the session's CSRF token;
    `act` refuses viewers, `supervise` everyone but supervisors."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def guarded(request: Request) -> Response:
            viewer, why = current_viewer(request)
            if viewer is None:
                target = "/login?next=" + quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                    safe="",
                )
                if why == "expired":
                    target += "&expired=1"
                return RedirectResponse(target, status_code=303)
            request.state.viewer = viewer
            _ = gettext_for(request)
            if request.method == "POST":
                form = await request.form()
                if not csrf_ok(form, viewer.csrf):
                    return refuse(
                        request,
                        403,
                        _(
                            "This form did not come from this console, or it is from a "
                            "session that has ended. Reload the page and send it again."
                        ),
                    )
            if viewer.must_change_password and request.url.path != "/password":
                return RedirectResponse("/password", status_code=303)
            if (
                desk_of(request).config.require_totp
                and not viewer.has_totp
                and request.url.path not in ACCOUNT_PAGES
            ):
                # [sessions] require_totp: nothing else until the second factor is set up.
                return RedirectResponse("/account", status_code=303)
            if act and not viewer.can_act:
                return refuse(
                    request, 403, _("You can read this console but not act: your role is viewer.")
                )
            if supervise and not viewer.supervisor:
                return refuse(request, 403, _("Only a supervisor can do this."))
            return await endpoint(request)

        return guarded

    return wrap


def viewer_of(request: Request) -> Viewer:
    viewer = request.state.viewer
    assert isinstance(viewer, Viewer)
    return viewer


def people(desk: Desk, role: str | None = None) -> list[Person]:
    with desk.db() as s:
        query = select(Person).where(Person.disabled.is_(False))
        if role:
            query = query.where(Person.role == role)
        return list(s.scalars(query.order_by(Person.username)))


def countdown(deadline: datetime | None, start: datetime | None, now: datetime) -> dict[str, Any]:
    """What a clock shows: seconds left (negative when breached) and its urgency colour:
    red when breached or under 20% of its window is left, yellow under 50%, else green."""
    if deadline is None:
        return {"left": None, "urgency": "none", "text": "—"}
    left = (deadline - now).total_seconds()
    window = (deadline - start).total_seconds() if start else 0.0
    share = left / window if window > 0 else (1.0 if left > 0 else 0.0)
    urgency = "red" if left <= 0 or share < 0.2 else "yellow" if share < 0.5 else "green"
    return {"left": left, "urgency": urgency, "text": duration_text(left)}


def duration_text(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    left = abs(int(seconds))
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}:{secs:02d}"


def svg(markup: str) -> Markup:
    """An SVG the console itself drew (every label in it escaped when drawn)."""
    return Markup(markup)


def within(moment: datetime, now: datetime, span: timedelta) -> bool:
    return now - moment <= span
