"""The console's web application: signing in and out, a person's settings, the proposals
inbox, the journal, the live event stream, and the desks of adapters/console/pages/."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import segno
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from adapters.console import actions
from adapters.console.actions import DecisionError
from adapters.console.config import ConsoleConfig
from adapters.console.db import ConsoleDb
from adapters.console.hublink import HubLink
from adapters.console.i18n import LANGUAGES
from adapters.console.live import Broadcaster, Event
from adapters.console.models import JournalEntry, Person, Proposal, Session
from adapters.console.pages import centre, common, leads, member, oversight, warnings
from adapters.console.people import (
    PeopleError,
    check_password,
    enrol_totp,
    is_totp_secret,
    new_totp_secret,
    set_password,
    sign_in,
    totp_uri,
)
from adapters.console.web import (
    COOKIE,
    LANGUAGE_COOKIE,
    LOGIN_CSRF_COOKIE,
    Desk,
    cookie,
    current_viewer,
    desk_of,
    gettext_for,
    hash_token,
    open_session,
    page,
    refuse,
    render,
    set_cookie,
    viewer_of,
)
from adapters.sdk import HubClient
from adapters.sdk.client import Clock
from stophub.v1 import institution_pb2

STATIC = Path(__file__).with_name("static")

_KINDS = {
    institution_pb2.INSTITUTION_KIND_BANK: "bank",
    institution_pb2.INSTITUTION_KIND_PAYMENT_INSTITUTION: "payment_institution",
    institution_pb2.INSTITUTION_KIND_ANTI_FRAUD_CENTRE: "anti_fraud_centre",
    institution_pb2.INSTITUTION_KIND_REGULATOR: "regulator",
    institution_pb2.INSTITUTION_KIND_AUDITOR: "auditor",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; media-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if desk_of(request).config.https:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response


def _safe_next(target: str | None) -> str:
    """Only a path of this console: `next` must not send a person elsewhere after login."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def login_form(request: Request) -> Response:
    viewer, _why = current_viewer(request, touch=False)
    if viewer is not None:
        return RedirectResponse("/", status_code=303)
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "next": _safe_next(request.query_params.get("next")),
            "expired": bool(request.query_params.get("expired")),
            "error": "",
            "username": "",
        },
    )
    set_cookie(request, response, cookie(request, LOGIN_CSRF_COOKIE), token)
    chosen = request.query_params.get("lang", "")
    if chosen in LANGUAGES:
        set_cookie(request, response, cookie(request, LANGUAGE_COOKIE), chosen)
    return response


async def login(request: Request) -> Response:
    desk = desk_of(request)
    form = await request.form()
    _ = gettext_for(request)
    expected = request.cookies.get(cookie(request, LOGIN_CSRF_COOKIE), "")
    given = str(form.get("csrf", ""))
    if not expected or not secrets.compare_digest(given, expected):
        return refuse(request, 403, _("The sign-in form had expired. Open the sign-in page again."))
    username = str(form.get("username", "")).strip().lower()
    password = str(form.get("password", ""))
    code = str(form.get("totp", ""))
    target = _safe_next(str(form.get("next", "/")))
    now = desk.clock.now()
    with desk.db() as s:
        result = sign_in(
            s,
            username,
            password,
            code,
            now,
            lockout_after=desk.config.lockout_after,
            lockout_for=desk.config.lockout_for,
        )
        person_id = result.person.id if result.person else None
    if result.result != "ok" or person_id is None:
        messages = {
            "wrong": _("Wrong user name or password."),
            "totp_wrong": _("Wrong user name, password or code."),
            "totp_needed": _("Enter the 6-digit code from your authenticator app."),
            "disabled": _("This account is disabled. Ask a supervisor."),
            "locked": _(
                "Too many failed attempts: this account is locked until {time}. "
                "A supervisor can unlock it with `stophub console user reset`."
            ).format(time=desk.local_time(result.locked_until, "%H:%M")),
        }
        actions.journal(desk, username or "?", "login", "sign-in refused", result.result)
        token = secrets.token_urlsafe(32)
        response = render(
            request,
            "login.html",
            {
                "login_csrf": token,
                "next": target,
                "expired": False,
                "error": messages[result.result],
                "username": username,
                "totp_needed": result.result in ("totp_needed", "totp_wrong"),
            },
            status=401 if result.result != "locked" else 423,
        )
        set_cookie(request, response, cookie(request, LOGIN_CSRF_COOKIE), token)
        return response
    with desk.db() as s:
        person = s.get(Person, person_id)
        assert person is not None
    redirect = RedirectResponse(target, status_code=303)
    open_session(request, person, redirect)
    redirect.delete_cookie(cookie(request, LOGIN_CSRF_COOKIE), path="/")
    actions.journal(desk, person.username, "login", "signed in", "login")
    return redirect


@page()
async def logout(request: Request) -> Response:
    desk = desk_of(request)
    token = request.cookies.get(cookie(request, COOKIE), "")
    with desk.db() as s:
        row = s.get(Session, hash_token(token))
        if row is not None:
            row.ended = True
    actions.journal(desk, viewer_of(request).username, "logout", "signed out", "logout")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(cookie(request, COOKIE), path="/")
    return response


@page()
async def home(request: Request) -> Response:
    desk = desk_of(request)
    if desk.centre:
        return RedirectResponse("/queue", status_code=303)
    if desk.member:
        return RedirectResponse("/inbox", status_code=303)
    return RedirectResponse("/cases", status_code=303)


@page()
async def language(request: Request) -> Response:
    desk = desk_of(request)
    form = await request.form()
    chosen = str(form.get("language", ""))
    if chosen in LANGUAGES:
        with desk.db() as s:
            person = s.get(Person, viewer_of(request).id)
            assert person is not None
            person.language = chosen
    return RedirectResponse(_safe_next(str(form.get("back", "/"))), status_code=303)


def _password_right(desk: Desk, s: DbSession, person: Person, password: str) -> bool:
    """Whether a signed-in person's password is right, counted as a sign-in attempt (so
    repeated wrong ones lock the account, as at the sign-in form)."""
    check = sign_in(
        s,
        person.username,
        password,
        "",
        desk.clock.now(),
        lockout_after=desk.config.lockout_after,
        lockout_for=desk.config.lockout_for,
    )
    return check.result in ("ok", "totp_needed")


@page()
async def password(request: Request) -> Response:
    desk = desk_of(request)
    viewer = viewer_of(request)
    _ = gettext_for(request)
    if request.method == "GET":
        return render(request, "password.html", {"error": ""})
    form = await request.form()
    current, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
    error = ""
    with desk.db() as s:
        person = s.get(Person, viewer.id)
        assert person is not None
        if not _password_right(desk, s, person, current):
            error = _("Your current password is not right.")
        elif new != again:
            error = _("The two new passwords differ.")
        elif new == current:
            error = _("Choose a password you have not used here.")
        else:
            try:
                check_password(new)
            except PeopleError:
                error = _("A password has at least 12 characters.")
        if not error:
            set_password(person, new, must_change=False)
    if error:
        return render(request, "password.html", {"error": error}, status=400)
    actions.journal(desk, viewer.username, "password", "password changed", "done")
    return RedirectResponse("/", status_code=303)


def _account(request: Request, secret: str, error: str = "", status: int = 200) -> Response:
    """The account page; `secret`: the authenticator secret offered for enrolment."""
    desk = desk_of(request)
    viewer = viewer_of(request)
    context: dict[str, object] = {"error": error, "secret": "", "qr": "", "uri": ""}
    if not viewer.has_totp:
        uri = totp_uri(viewer.username, desk.institution, secret)
        context.update(
            secret=secret,
            uri=uri,
            # Drawn here, inline: the console fetches nothing from elsewhere.
            qr=segno.make(uri, error="m").svg_inline(scale=4, dark="#1b1b1b"),
        )
    return render(request, "account.html", context, status=status)


@page()
async def account(request: Request) -> Response:
    return _account(request, new_totp_secret())


@page()
async def two_factor(request: Request) -> Response:
    """Turn on the second factor: the person's password, and a code from the authenticator
    app that scanned the secret offered (so the app holds it before sign-in depends on it)."""
    desk = desk_of(request)
    viewer = viewer_of(request)
    _ = gettext_for(request)
    form = await request.form()
    secret, code, current = (str(form.get(k, "")) for k in ("secret", "code", "password"))
    error = ""
    with desk.db() as s:
        person = s.get(Person, viewer.id)
        assert person is not None
        if person.totp_secret:
            error = _("Two-factor sign-in is on already; a supervisor can replace it.")
        elif not _password_right(desk, s, person, current):
            error = _("Your current password is not right.")
        elif not enrol_totp(person, secret, code, desk.clock.now()):
            error = _(
                "That code does not match: scan the code again and type the newest six digits."
            )
    if error:
        # The same secret again, so a wrong code does not mean scanning anew; a forged one is
        # never offered back.
        offered = secret if is_totp_secret(secret) else new_totp_secret()
        return _account(request, offered, error, status=400)
    actions.journal(desk, viewer.username, "two_factor", "two-factor sign-in turned on", "done")
    return RedirectResponse("/account?enrolled=1", status_code=303)


@page()
async def proposals(request: Request) -> Response:
    desk = desk_of(request)
    with desk.db() as s:
        recent = list(
            s.scalars(
                select(Proposal)
                .where(Proposal.state != "pending")
                .order_by(Proposal.decided_at.desc())
                .limit(30)
            )
        )
    return render(
        request,
        "proposals.html",
        {"pending": actions.pending(desk), "recent": recent},
    )


@page()
async def proposal(request: Request) -> Response:
    desk = desk_of(request)
    actions.expire(desk)
    with desk.db() as s:
        found = s.get(Proposal, request.path_params["id"])
    if found is None:
        return refuse(request, 404, gettext_for(request)("There is no such proposal."))
    return render(request, "proposal.html", {"p": found, "error": ""})


@page(supervise=True)
async def decide(request: Request) -> Response:
    desk = desk_of(request)
    viewer = viewer_of(request)
    form = await request.form()
    proposal_id = request.path_params["id"]
    _ = gettext_for(request)
    try:
        if form.get("decision") == "approve":
            outcome = await actions.approve(desk, viewer, proposal_id)
            if outcome.refusal is not None:
                with desk.db() as s:
                    found = s.get(Proposal, proposal_id)
                return render(
                    request, "proposal.html", {"p": found, "refusal": outcome.refusal}, status=409
                )
        else:
            actions.reject(desk, viewer, proposal_id, str(form.get("reason", "")))
    except DecisionError as err:
        with desk.db() as s:
            found = s.get(Proposal, proposal_id)
        if found is None:
            return refuse(request, 404, _(str(err)))
        return render(request, "proposal.html", {"p": found, "error": _(str(err))}, status=409)
    return RedirectResponse(f"/proposals/{proposal_id}", status_code=303)


@page()
async def journal_page(request: Request) -> Response:
    desk = desk_of(request)
    person = request.query_params.get("person", "")
    with desk.db() as s:
        query = select(JournalEntry).order_by(JournalEntry.id.desc()).limit(200)
        if person:
            query = query.where(JournalEntry.person == person)
        entries = list(s.scalars(query))
    return render(request, "journal.html", {"entries": entries, "person": person})


async def events(request: Request) -> Response:
    """Server-sent events for a signed-in browser: deliveries, breaches, proposals, the
    link's state. Listening does not count as activity: the session still times out."""
    viewer, _why = current_viewer(request, touch=False)
    if viewer is None:
        return PlainTextResponse("sign in first", status_code=401)
    desk = desk_of(request)
    queue = desk.broadcaster.subscribe()
    token = request.cookies.get(cookie(request, COOKIE), "")

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    with desk.db() as s:
                        row = s.get(Session, hash_token(token))
                        alive = (
                            row is not None
                            and not row.ended
                            and desk.clock.now() - row.last_seen <= desk.config.idle_timeout
                        )
                    if not alive:
                        yield Event("expired", "session ended").sse()
                        return
                    yield ": keep-alive\n\n"
                    continue
                yield event.sse()
        finally:
            desk.broadcaster.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def health(request: Request) -> Response:
    state = desk_of(request).link.state
    return PlainTextResponse(
        "ok" if state.ok else f"hub unreachable: {state.problem}",
        status_code=200 if state.ok else 503,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", home),
        Route("/language", language, methods=["POST"]),
        Route("/password", password, methods=["GET", "POST"]),
        Route("/account", account),
        Route("/account/two-factor", two_factor, methods=["POST"]),
        Route("/proposals", proposals),
        Route("/proposals/{id}", proposal),
        Route("/proposals/{id}/decide", decide, methods=["POST"]),
        Route("/journal", journal_page),
        Route("/events", events),
        Route("/healthz", health),
        *common.ROUTES,
        *centre.ROUTES,
        *member.ROUTES,
        *oversight.ROUTES,
        *warnings.ROUTES,
        *leads.ROUTES,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def identify(desk: Desk) -> None:
    """Learn from the hub's registry what kind of institution this console serves."""
    with contextlib.suppress(Exception):
        me = await desk.link.call(lambda c: c.get_institution(c.institution))
        desk.kind = _KINDS.get(me.kind, "")
        desk.institution_name = me.display_name


def create_app(
    config: ConsoleConfig,
    client: HubClient,
    clock: Clock,
    *,
    stream: bool = True,
    kind: str = "",
) -> Starlette:
    """The console for `client`'s institution. `kind` skips asking the hub at start (tests);
    the delivery stream is held when `stream`."""
    db = ConsoleDb(config.database_url)
    db.migrate()
    broadcaster = Broadcaster()
    link = HubLink(client, db, broadcaster, clock, stream=stream)
    desk = Desk(config, db, link, clock, broadcaster, client.institution, kind=kind)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await link.start()
        if not desk.kind:
            await identify(desk)
        expiry = asyncio.create_task(_expire_proposals(desk))
        try:
            yield
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            await link.stop()
            db.dispose()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.desk = desk
    return app


async def _expire_proposals(desk: Desk) -> None:
    while True:
        # Until the hub has said what this institution is (it may refuse at first: a clock
        # out of step, a key not yet registered), ask again soon.
        await asyncio.sleep(30 if desk.kind else 2)
        with contextlib.suppress(Exception):
            if not desk.kind:
                await identify(desk)
            actions.expire(desk)
