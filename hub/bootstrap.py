"""Where the real adapters meet the core: database, clock, hub key, server."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

import migrations
from hub.api.server import HubServer, start_server
from hub.crypto import fields
from hub.crypto.keys import PrivateKey, load_private_key
from hub.crypto.listkey import DEFAULT_FILE as DEFAULT_LIST_KEY
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKey, load_list_key_file, resolve_list_key
from hub.crypto.pki import TlsConfig
from hub.domain.cases import Policy
from hub.domain.clocks import Policy as ClockPolicy
from hub.domain.institutions import HUB_CODE, InstitutionKind
from hub.observability.health import sql_probe
from hub.observability.logmask import install as mask_accounts_in_logs
from hub.observability.metrics import sql_snapshot
from hub.service.admin import NewKey, Registry
from hub.service.handlers import Hub
from hub.service.ports import Clock, Notifier
from hub.store.sql import SqlStore, normalise_url
from hub.system.calendar import ChineseWorkingDays
from hub.system.clock import SystemClock
from hub.system.policy import load_policy

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "sqlite:///var/stophub.db"
DEFAULT_HUB_KEY = "var/hub.key"
DEFAULT_ADDRESS = "127.0.0.1:7443"
DEFAULT_TLS_DIR = "var/pki"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    command.upgrade(alembic_config(url), "head")


def ensure_hub_registered(store: SqlStore, key: PrivateKey, clock: Clock) -> None:
    """The hub is a member too, so members can read its keys from the registry."""
    registry = Registry(store, clock)
    with store(read_only=True) as uow:
        hub = uow.institutions.get(HUB_CODE)
        known = hub is not None and hub.key(key.key_id) is not None
    if hub is None:
        registry.add_institution(
            HUB_CODE,
            "StopHub",
            InstitutionKind.HUB,
            [NewKey(key.algorithm, key.public_key)],
            [],
            operator="hub",
        )
    elif not known:
        registry.add_key(HUB_CODE, NewKey(key.algorithm, key.public_key), operator="hub")


def build_hub(
    store: SqlStore,
    key: PrivateKey,
    notifier: Notifier,
    *,
    clock: Clock | None = None,
    policy: Policy | None = None,
    clock_policy: ClockPolicy | None = None,
    list_key: ListKey | None = None,
) -> Hub:
    return Hub(
        store,
        clock or SystemClock(),
        key,
        notifier,
        policy,
        clock_policy=clock_policy or load_policy(),
        calendar=ChineseWorkingDays(),
        list_key=list_key,
    )


def find_list_key(given: ListKey | str | Path | None, *, quiet: bool = False) -> ListKey | None:
    """The list key given, or the one the environment or the default file holds; None (with a
    warning, unless `quiet`) when there is none at all: the hub then serves everything but
    the list."""
    if isinstance(given, ListKey):
        return given
    if given is not None:
        return load_list_key_file(given)
    if (
        os.environ.get(LIST_KEY_ENV_FILE)
        or os.environ.get(LIST_KEY_ENV)
        or Path(DEFAULT_LIST_KEY).exists()
    ):
        return resolve_list_key()
    if quiet:
        return None
    log.warning(
        "no list key (%s, $%s or $%s): the blacklist cannot be published or checked on this "
        "hub; create one with `stophub listkey generate`",
        DEFAULT_LIST_KEY,
        LIST_KEY_ENV_FILE,
        LIST_KEY_ENV,
    )
    return None


async def serve(
    database_url: str,
    hub_key: PrivateKey | str | Path,
    address: str = DEFAULT_ADDRESS,
    *,
    clock: Clock | None = None,
    run_migrations: bool = True,
    ack_timeout: float = 5.0,
    workers: int = 8,
    policy_file: str | Path | None = None,
    sweep_interval: float | None = 0.5,
    late_after: timedelta | None = None,
    tls: TlsConfig | None = None,
    data_keys: fields.Keyring | str | Path | None = None,
    list_key: ListKey | str | Path | None = None,
    metrics_address: str | None = None,
    health_address: str | None = None,
    health_interval: float = 5.0,
) -> tuple[HubServer, SqlStore]:
    """`data_keys`: the keyring (or its file) that seals personal data; None keeps the one
    already configured in this process, and there must be one.

    `metrics_address` (HOST:PORT) serves Prometheus metrics at /metrics; `health_address`
    opens a plain-text port with grpc.health.v1 only. Health on every port follows the
    database, probed every `health_interval` seconds (docs/operations.md)."""
    if data_keys is not None:
        if not isinstance(data_keys, fields.Keyring):
            data_keys = fields.load_keyring_file(data_keys)
        fields.configure(data_keys)
    fields.keyring()  # no keys, no start: nothing is ever stored in plain text
    mask_accounts_in_logs()
    key = hub_key if isinstance(hub_key, PrivateKey) else load_private_key(hub_key)
    clock = clock or SystemClock()
    clock_policy = load_policy(policy_file)  # a bad file stops the start, naming the line
    network_list_key = find_list_key(list_key)
    if run_migrations:
        migrate(database_url)
    store = SqlStore(database_url)
    ensure_hub_registered(store, key, clock)
    server = await start_server(
        lambda notifier: build_hub(
            store,
            key,
            notifier,
            clock=clock,
            clock_policy=clock_policy,
            list_key=network_list_key,
        ),
        address,
        ack_timeout=ack_timeout,
        workers=workers,
        sweep_interval=sweep_interval,
        tls=tls,
        metrics_address=metrics_address,
        health_address=health_address,
        database_probe=sql_probe(store),
        read_snapshot=sql_snapshot(store),
        health_interval=health_interval,
    )
    if late_after is not None:
        server.hub.sweeper.late_after = late_after
    return server, store
