"""The `stophub` command: serve the hub, migrate, keep the registry, look at cases, run the demo.

This module is the main group (its options apply to every command) and the one place every
command group is registered; each group lives in a module of its own under hub/cli/, named
after it, and imports what they share from hub/cli/common.py (never this module). How things
look (cases, trails, clocks, the SLA report) is drawn in hub/cli/render/.
"""

from __future__ import annotations

import click

from hub.cli import (
    appeal,
    audit,
    case,
    datakeys,
    demo,
    institution,
    keys,
    listkey,
    lists,
    pki,
    replica,
    report,
    serve,
    sla,
)
from hub.cli.common import data_keys_option, remember_group_options
from hub.observability import logs as observability_logs


@click.group()
@click.option("--log-level", default="WARNING", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(observability_logs.FORMATS),
    default="text",
    show_default=True,
    envvar=observability_logs.ENV_FORMAT,
    help="text, or json: one JSON object per line (time, level, logger, message, and "
    f"case_id, message_id, institution, rpc when known). Env: ${observability_logs.ENV_FORMAT}.",
)
@data_keys_option
def main(log_level: str, log_format: observability_logs.LogFormat, data_keys: str | None) -> None:
    """StopHub: emergency stop-payment coordination between banks, payment institutions and
    the police anti-fraud centre."""
    remember_group_options(data_keys, log_format)
    observability_logs.configure(log_level, log_format)


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
    replica.replica_command,
    report.report,
    demo.demo,
):
    main.add_command(command)
