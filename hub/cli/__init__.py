"""The `stophub` command: serve the hub, migrate, keep the registry, look at cases, run the demo.

This module is the main group and the one place every command group is registered; each
group lives in a module of its own under hub/cli/, named after it, and imports what they
share from hub/cli/common.py (never this module). How things look (cases, trails, clocks,
the SLA report) is drawn in hub/render/. The main group's options apply to every
command, given before it or after it (`share_options`), and whatever fails below it ends as
one line that says what to do (`OneLineErrors`).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from typing import Any, cast

import click
from alembic.util import CommandError
from click.core import ParameterSource
from sqlalchemy.exc import DBAPIError

from hub import bootstrap
from hub.cli import (
    appeal,
    audit,
    case,
    console,
    datakeys,
    demo,
    institution,
    keys,
    lead,
    listkey,
    lists,
    pki,
    replica,
    report,
    serve,
    sla,
    warning,
)
from hub.cli.common import (
    DATA_KEYS_HELP,
    DB_HELP,
    ENV_DATABASE,
    ENV_TZ,
    LOG_LEVELS,
    REFUSALS,
    ZoneParam,
    chosen,
    database_url_given,
    log,
    one_line,
    resolve_display_zone,
)
from hub.crypto import fields
from hub.domain.errors import DomainError
from hub.observability import logs as observability_logs
from hub.observability.logs import LogFormat
from hub.render.wording import set_display_zone
from hub.service.ports import StoreUnavailable


class OneLineErrors(click.Group):
    """The main group: a refusal or an operational failure anywhere below it (a database
    that cannot be reached, opened or written, a file that cannot be read or written) ends
    as one line that says what to do, with exit status 1, never a traceback;
    `--log-level DEBUG` logs the traceback too. Bad input on the command line is one line
    too (exit status 2), naming the help to read instead of printing the usage."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:
            raise _one_line_usage(err) from err

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            raise _one_line_usage(err) from err
        except (DomainError, *REFUSALS, DBAPIError, StoreUnavailable, CommandError, OSError) as err:
            if isinstance(err, OSError) and err.errno == errno.EPIPE:
                raise  # a reader that went away (`| head`): click ends quietly
            message = one_line(err)
            if message is None:
                raise
            log.debug("%s", message, exc_info=True)
            raise click.ClickException(message) from err


def _one_line_usage(err: click.UsageError) -> click.UsageError:
    if isinstance(err, click.exceptions.NoArgsIsHelpError) or err.ctx is None:
        return err  # the help itself, or already one line
    said = err.format_message().rstrip(".")
    return click.UsageError(f"{said}; see `{err.ctx.command_path} --help`")


@click.group(cls=OneLineErrors)
@click.version_option(package_name="stophub", prog_name="stophub", message="%(prog)s %(version)s")
def main() -> None:
    """StopHub: emergency stop-payment coordination between banks, payment institutions and
    the police anti-fraud centre.

    The options here apply to the command that follows, and may be given after it as well:
    `stophub --db URL case list` is `stophub case list --db URL`."""


for command in (
    serve.serve,
    serve.migrate,
    keys.keys,
    datakeys.datakeys,
    listkey.listkey_group,
    pki.pki_group,
    institution.institution,
    case.case,
    sla.sla,
    sla.board,
    sla.sla_export,
    audit.audit,
    lists.list_group,
    appeal.appeal_group,
    lead.lead_group,
    warning.warning_group,
    replica.replica_command,
    report.report,
    demo.demo,
    console.console_group,
):
    main.add_command(command)


# ---- the main group's options, before the command or after it ---------------------------------

_log_handlers: list[logging.Handler] = []  # the handlers the CLI's logging added


def _configure_logs() -> None:
    # Given again after the command, the options replace what the group's configured: the
    # handlers the first configuration added go, so the second one takes effect.
    root = logging.getLogger()
    for handler in _log_handlers:
        root.removeHandler(handler)
    before = set(root.handlers)
    worker = os.environ.get(observability_logs.ENV_WORKER, "")
    observability_logs.configure(
        chosen.log_level, chosen.log_format, int(worker) if worker.isdigit() else None
    )
    _log_handlers[:] = [h for h in root.handlers if h not in before]


def _chosen(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A main group's option: given before the command, it sets what the command runs with
    (its default when absent, so nothing stays from an earlier invocation in the same
    process); given after the command too, it replaces that."""
    on_group = ctx.parent is None
    if value is None and not on_group:
        return value
    name = param.name or ""
    if name == "data_keys":
        from_env = ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT
        chosen.data_keys = value
        chosen.data_keys_from = f"${fields.ENV_FILE}" if from_env else "--data-keys"
    elif name == "zone":
        set_display_zone(resolve_display_zone(value) if on_group else value)
    elif name == "database_url":
        chosen.database_url = value
    elif name == "log_level":
        chosen.log_level = str(value or "WARNING").upper()
        _configure_logs()
    elif name == "log_format":
        chosen.log_format = cast(LogFormat, value or "text")
        _configure_logs()
    return value


def _shared_options(*, on_group: bool, database: bool = True) -> list[click.Option]:
    """The main group's options, as the group takes them and as a command takes them after
    its name (`share_options`): each with `_chosen` as callback, none passed to the
    command's function."""
    given: dict[str, Any] = {"expose_value": False, "callback": _chosen}

    def helped(text: str) -> str:
        # After a command, the line says it is the main option, not what the option is.
        return text if on_group else "As before the command (`stophub --help`)."

    options = [
        click.Option(
            ["--log-level", "log_level"],
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            metavar="LEVEL",
            default="WARNING" if on_group else None,
            show_default=on_group,
            help=helped("DEBUG, INFO, WARNING, ERROR or CRITICAL."),
            **given,
        ),
        click.Option(
            ["--log-format", "log_format"],
            type=click.Choice(observability_logs.FORMATS),
            default="text" if on_group else None,
            show_default=on_group,
            envvar=observability_logs.ENV_FORMAT if on_group else None,
            help=helped(
                "text, or json: one JSON object per line (time, level, logger, message, and "
                "case_id, message_id, institution, rpc when known). Env: "
                f"${observability_logs.ENV_FORMAT}."
            ),
            **given,
        ),
    ]
    if not database:
        return options
    options += [
        click.Option(
            ["--tz", "zone"],
            type=ZoneParam(),
            default=None,
            help=helped(
                "The time zone times are shown in, an IANA name such as Asia/Shanghai "
                f"(default: ${ENV_TZ}, else UTC); --json is always UTC."
            ),
            **given,
        ),
        click.Option(
            ["--data-keys", "data_keys"],
            default=None,
            type=click.Path(dir_okay=False),
            envvar=fields.ENV_FILE if on_group else None,
            help=helped(DATA_KEYS_HELP),
            **given,
        ),
    ]
    if on_group:
        options.append(
            click.Option(
                ["--db", "database_url"],
                metavar="URL",
                default=None,
                callback=_database_url_and_chosen,
                expose_value=False,
                help=f"{DB_HELP} For every command that opens the hub's database "
                f"(default: ${ENV_DATABASE}, else {bootstrap.DEFAULT_DATABASE}).",
            )
        )
    return options


def _database_url_and_chosen(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    chosen.opened = ""
    return _chosen(ctx, param, database_url_given(ctx, param, value))


def share_options(group: click.Group) -> None:
    """Give `group` (the main one) its options, and accept them after a command as well,
    where a user would type them: --log-level and --log-format on every command; --tz and
    --data-keys on every command that opens the hub's database (whose own --db has the
    group's as default)."""
    group.params.extend(_shared_options(on_group=True))
    for command in _leaves(group):
        names = {p.name for p in command.params}
        shared = _shared_options(on_group=False, database="database_url" in names)
        command.params.extend(p for p in shared if p.name not in names)


def _leaves(group: click.Group) -> Iterable[click.Command]:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _leaves(command)
        else:
            yield command


share_options(main)
