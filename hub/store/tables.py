"""Tables, and the imperative mapping of the domain's plain classes onto them.

The domain classes stay free of SQLAlchemy (cosmicpython's "classical mapping").
Constraint names follow one naming convention so Alembic revisions are stable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import registry, relationship
from sqlalchemy.types import TypeDecorator

from hub.crypto.fields import Sealed, SealedTable, SealedText, SealedType
from hub.domain.appeals import Appeal, AppealState, ReferenceKind
from hub.domain.cases import (
    Case,
    CaseEvent,
    CaseState,
    ExecutionStatus,
    FraudTransaction,
    OnwardTransfer,
    Order,
    OrderKind,
    OrderState,
    TransactionFact,
)
from hub.domain.clocks import CaseClock, ClockState
from hub.domain.institutions import (
    ContactRole,
    DutyContact,
    Institution,
    InstitutionKey,
    InstitutionKind,
    KeyState,
)
from hub.domain.leads import Lead, LeadOutcome, LeadState
from hub.domain.returns import Claim, Distribution, DistributionMethod, DistributionState, Objection
from hub.domain.rules import AutoStopRule
from hub.domain.warnings import Grade, Outcome, Warning, WarningState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
mapper_registry = registry(metadata=metadata)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no time zones) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the store; times are aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _enum(cls: Any, name: str) -> Enum:
    # Stored as the enum's string values in a VARCHAR, so adding a value needs no DDL.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
    )


Money = BigInteger
Code = String(32)
Account = String(40)

institutions = Table(
    "institutions",
    metadata,
    Column("code", Code, primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("kind", _enum(InstitutionKind, "institution_kind"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

institution_keys = Table(
    "institution_keys",
    metadata,
    Column("institution_code", Code, ForeignKey("institutions.code"), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("algorithm", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("state", _enum(KeyState, "key_state"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("not_after", UTCDateTime()),
)

duty_contacts = Table(
    "duty_contacts",
    metadata,
    Column("institution_code", Code, ForeignKey("institutions.code"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("role", _enum(ContactRole, "contact_role"), nullable=False),
    Column("name", SealedText("duty_contacts.name"), nullable=False),
    Column("phone", SealedText("duty_contacts.phone"), nullable=False),
    Column("email", SealedText("duty_contacts.email"), nullable=False),
)

# One row whose version goes up in the transaction of every change to the members, their
# keys or contacts (hub/store/sql.py bumps it before each such flush). The hub caches the
# registry and re-reads it only when the version it reads inside a request's transaction
# differs, so a revocation still counts from the very next request.
registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(40), primary_key=True),
    Column("reporting_institution", Code, ForeignKey("institutions.code"), nullable=False),
    Column("state", _enum(CaseState, "case_state"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("verified_at", UTCDateTime()),
    Column("closed_at", UTCDateTime()),
    Column("report_message_id", String(128), nullable=False),
    Column("report_envelope", Sealed("cases.report_envelope")),
    Column("victim_name", SealedText("cases.victim_name"), nullable=False),
    Column("victim_id_number", SealedText("cases.victim_id_number"), nullable=False),
    Column("victim_phone", SealedText("cases.victim_phone"), nullable=False),
    Column("fraud_type", String(64), nullable=False),
    Column("description", SealedText("cases.description"), nullable=False),
    Column("victim_report_time", UTCDateTime()),
    Column("verification_reason", SealedText("cases.verification_reason"), nullable=False),
    # The blind index (hub/crypto/blindindex.py, docs/personal-data.md): HMAC-SHA256 tokens of
    # the normalised victim name and ID number, and the data key id their key was derived from.
    Column("victim_name_token", LargeBinary(32)),
    Column("victim_id_token", LargeBinary(32)),
    Column("victim_index_key", String(64)),
    # The three-colour grade (docs/grades.md): red, yellow, green, or "" for ungraded.
    Column("grade", String(8), nullable=False, server_default=""),
    Index("ix_cases_state_created_at", "state", "created_at"),
    Index("ix_cases_created_at_case_id", "created_at", "case_id"),
    Index("ix_cases_reporting_institution_created_at", "reporting_institution", "created_at"),
    Index("ix_cases_victim_name_token", "victim_name_token"),
    Index("ix_cases_victim_id_token", "victim_id_token"),
)

fraud_transactions = Table(
    "fraud_transactions",
    metadata,
    Column("case_id", String(40), ForeignKey("cases.case_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("transaction_time", UTCDateTime(), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("payer_institution", Code, nullable=False),
    Column("payer_account", Account, nullable=False),
    Column("payer_name", SealedText("fraud_transactions.payer_name"), nullable=False),
    Column("payee_institution", Code, nullable=False),
    Column("payee_account", Account, nullable=False),
    Column("payee_name", SealedText("fraud_transactions.payee_name"), nullable=False),
    Column("channel", String(40), nullable=False),
    Column("reference", String(128), nullable=False),
    Index("ix_fraud_transactions_payee", "payee_institution", "payee_account"),
    Index("ix_fraud_transactions_payer", "payer_institution", "payer_account"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("case_id", String(40), ForeignKey("cases.case_id"), nullable=False, index=True),
    Column("kind", _enum(OrderKind, "order_kind"), nullable=False),
    Column("state", _enum(OrderState, "order_state"), nullable=False),
    Column("addressed_to", Code, ForeignKey("institutions.code"), nullable=False),
    Column("issued_by", Code, ForeignKey("institutions.code"), nullable=False),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("origin_message_id", String(128), nullable=False),
    Column("auto_stop_rule_id", String(64)),
    Column("account_institution", Code, nullable=False),
    Column("account_number", Account, nullable=False),
    Column("holder_name", SealedText("orders.holder_name"), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("filed_case_number", String(64), nullable=False),
    Column("approving_authority", String(200), nullable=False),
    Column("term_months", Integer, nullable=False),
    Column("target_order_id", String(40), nullable=False),
    Column("renews_order_id", String(40), nullable=False, server_default=""),
    Column("note", SealedText("orders.note"), nullable=False),
    Column("origin_envelope", Sealed("orders.origin_envelope")),
    Column("authorization_envelope", Sealed("orders.authorization_envelope")),
    Column("answer_envelope", Sealed("orders.answer_envelope")),
    Column("answer_message_id", String(128), nullable=False),
    Column("answered_at", UTCDateTime()),
    Column("effective_at", UTCDateTime()),
    Column("expires_at", UTCDateTime()),
    Column("result_status", _enum(ExecutionStatus, "execution_status")),
    Column("result_reason_code", String(8), nullable=False),
    Column("result_reason", SealedText("orders.result_reason"), nullable=False),
    Column("amount_held_fen", Money, nullable=False),
    Column("available_balance_fen", Money, nullable=False),
    Column("executed_at", UTCDateTime()),
    Column("held_fen", Money, nullable=False),
    Column("released_fen", Money, nullable=False),
    Column("returned_fen", Money, nullable=False),
    Column("upstream_order_id", String(40), nullable=False, server_default=""),
    Column("layer", Integer, nullable=False, server_default="0"),
    Column("distribution_id", String(40), nullable=False, server_default=""),
    Column("beneficiary_case_id", String(40), nullable=False, server_default=""),
    Index("ix_orders_account", "account_institution", "account_number"),
    Index("ix_orders_addressed_to_state", "addressed_to", "state"),
)

transaction_facts = Table(
    "transaction_facts",
    metadata,
    Column("order_id", String(40), ForeignKey("orders.order_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("transaction_time", UTCDateTime(), nullable=False),
    Column("amount_fen", Money, nullable=False),
)

onward_transfers = Table(
    "onward_transfers",
    metadata,
    Column("order_id", String(40), ForeignKey("orders.order_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("transfer_time", UTCDateTime(), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("to_institution", Code, nullable=False),
    Column("to_account", Account, nullable=False),
    Column("to_holder", SealedText("onward_transfers.to_holder"), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("carried_fen", Money, nullable=False, server_default="0"),
    Index("ix_onward_transfers_to", "to_institution", "to_account"),
)

distributions = Table(
    "distributions",
    metadata,
    Column("distribution_id", String(40), primary_key=True),
    Column("account_institution", Code, nullable=False),
    Column("account_number", Account, nullable=False),
    Column("case_id", String(40), ForeignKey("cases.case_id"), nullable=False),
    Column("started_by", Code, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("state", _enum(DistributionState, "distribution_state"), nullable=False),
    Column("method", _enum(DistributionMethod, "distribution_method"), nullable=False),
    Column("pool_fen", Money, nullable=False),
    Column("notice_ends_at", UTCDateTime()),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", Code, nullable=False),
    Column("decision_reason", SealedText("distributions.decision_reason"), nullable=False),
    Column("note", SealedText("distributions.note"), nullable=False),
    Index("ix_distributions_account", "account_institution", "account_number"),
)

distribution_claims = Table(
    "distribution_claims",
    metadata,
    Column(
        "distribution_id",
        String(40),
        ForeignKey("distributions.distribution_id"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("case_id", String(40), ForeignKey("cases.case_id"), nullable=False, index=True),
    Column("beneficiary_institution", Code, nullable=False),
    Column("beneficiary_account", Account, nullable=False),
    Column("beneficiary_name", SealedText("distribution_claims.beneficiary_name"), nullable=False),
    Column("loss_fen", Money, nullable=False),
    Column("claim_fen", Money, nullable=False),
    Column("traced_fen", Money, nullable=False),
    Column("evidence", SealedText("distribution_claims.evidence"), nullable=False),
    Column("share_fen", Money, nullable=False),
    Column("return_orders", Text, nullable=False),
)

distribution_objections = Table(
    "distribution_objections",
    metadata,
    Column(
        "distribution_id",
        String(40),
        ForeignKey("distributions.distribution_id"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("institution", Code, nullable=False),
    Column("grounds", SealedText("distribution_objections.grounds"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
)

case_events = Table(
    "case_events",
    metadata,
    Column("case_id", String(40), ForeignKey("cases.case_id"), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor", Code, nullable=False),
    Column("summary", SealedText("case_events.summary"), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("order_id", String(40), nullable=False),
    # The signed envelope's people (docs/signing.md): staff ids or names, so sealed.
    Column("operator", SealedText("case_events.operator")),
    Column("approver", SealedText("case_events.approver")),
)

auto_stop_rules = Table(
    "auto_stop_rules",
    metadata,
    Column("centre_code", Code, ForeignKey("institutions.code"), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("max_amount_fen", Money, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("follow_onward", Boolean, nullable=False, server_default=sa_false()),
    Column("max_layer", Integer, nullable=False, server_default="0"),
    Column("message_id", String(128), nullable=False),
    Column("envelope", Sealed("auto_stop_rules.envelope"), nullable=False),
)

# One row per accepted signed request: replays get `response` back byte for byte.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("sender", Code, primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("body_type", String(128), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("response", Sealed("inbound_messages.response"), nullable=False),
)

# The outbox: every message the hub owes an institution, in order, until acknowledged.
deliveries = Table(
    "deliveries",
    metadata,
    Column(
        "sequence",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("recipient", Code, ForeignKey("institutions.code"), nullable=False),
    Column("case_id", String(40)),
    Column("kind", String(40), nullable=False),
    Column("envelope", Sealed("deliveries.envelope"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("first_sent_at", UTCDateTime()),
    Column("attempts", Integer, nullable=False, default=0),
    Column("acked_at", UTCDateTime()),
    Index("ix_deliveries_recipient_acked_at_sequence", "recipient", "acked_at", "sequence"),
)

# Append-only evidence: every envelope received (accepted or rejected) and sent, and every
# transition. The Merkle log of a later issue hashes these rows in `id` order.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("case_id", String(40)),
    Column("order_id", String(40)),
    Column("payload", Sealed("audit_log.payload")),
    Column("detail", SealedText("audit_log.detail"), nullable=False),
    # The entry's position in the audit log's Merkle tree and its leaf hash (docs/audit.md),
    # given by the sequencer after the entry's transaction committed (ADR 15).
    Column("log_index", BigInteger),
    Column("leaf_hash", LargeBinary(32)),
    # The hub's tag (docs/audit.md, "The hub's tag"): HMAC-SHA256 of the entry's content
    # and id under a key derived from the data key `tag_key`, never stored, made in the
    # entry's own transaction. Empty on entries written before revision 0015.
    Column("tag_key", String(64)),
    Column("tag", LargeBinary(32)),
    # When the sequencer refused the entry because its tag did not verify (a row written
    # by something other than the hub): it is never placed.
    Column("refused_at", UTCDateTime()),
    Index("ix_audit_log_case_id", "case_id"),
    Index("ix_audit_log_log_index", "log_index", unique=True),
)

# One row: the tree's size and root, and its compact range (the roots of its perfect
# subtrees, 32 bytes each, largest first) so the next entries append without a rehash.
audit_log_state = Table(
    "audit_log_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("compact_range", LargeBinary, nullable=False),
    # Entries with ids below this were written before the hub tagged entries (revision
    # 0015 set it); the sequencer places them untagged, at the start of the tree only.
    Column("untagged_below_id", BigInteger, nullable=False, server_default="0"),
    # How many positions at the start of the tree hold such untagged entries (signed in
    # every checkpoint as LogCheckpoint.untagged_entries).
    Column("untagged_entries", BigInteger, nullable=False, server_default="0"),
)

# Hub-signed checkpoints of the tree (LogCheckpoint envelopes), kept for ever.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("signed_at", UTCDateTime(), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)

# The hub's old keys vouching for its new ones (HubKeyEndorsement envelopes signed by the
# endorsing key): `audit verify` trusts a hub key the auditor did not give only through a
# chain of these from one the auditor did.
hub_key_endorsements = Table(
    "hub_key_endorsements",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("endorsed_by", String(64), nullable=False),
    Column("endorsed_at", UTCDateTime(), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)

# The roots of the tree's perfect subtrees at every 8th height (docs/audit.md): node (h, i)
# covers leaves [i * 2^h, (i + 1) * 2^h). Written by the sequencer as each completes, so an
# inclusion or consistency proof reads O(log n) rows instead of every leaf. An index, not
# evidence: a wrong node only yields a proof that fails against the signed root.
audit_log_nodes = Table(
    "audit_log_nodes",
    metadata,
    Column("height", Integer, primary_key=True, autoincrement=False),
    Column("node_index", BigInteger, primary_key=True, autoincrement=False),
    Column("node_hash", LargeBinary(32), nullable=False),
)

# Case clocks: one row each, with the due time of its next step (the sweep's index).
clocks = Table(
    "clocks",
    metadata,
    Column("clock_id", String(40), primary_key=True),
    # The case the clock times, or the lead (lead_triage) or warning (warning_*) it times:
    # their clocks run here too, so they escalate and are listed as every clock is. No
    # foreign key to `cases`, then.
    Column("case_id", String(40), nullable=False, index=True),
    Column("order_id", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("responsible", Code, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("deadline_at", UTCDateTime(), nullable=False),
    Column("state", _enum(ClockState, "clock_state"), nullable=False),
    Column("next_step", String(32), nullable=False),
    Column("next_step_at", UTCDateTime()),
    Column("steps_done", Integer, nullable=False),
    Column("breached", Boolean, nullable=False),
    Column("stopped_at", UTCDateTime()),
    Column("stopped_by", String(40), nullable=False),
    # Counted in working days over a year without an official holiday calendar.
    Column("deadline_estimated", Boolean, nullable=False, server_default=sa_false()),
    # A breach acknowledged by a person (docs/clocks.md); the person and the note are sealed.
    Column("acknowledged_at", UTCDateTime()),
    Column("acknowledged_by", Code),
    Column("acknowledged_operator", SealedText("clocks.acknowledged_operator")),
    Column("acknowledge_note", SealedText("clocks.acknowledge_note")),
    Index("ix_clocks_state_next_step_at", "state", "next_step_at"),
    Index("ix_clocks_responsible_state", "responsible", "state"),
    # The metrics snapshot's figures read the open clocks and the breached ones, never the
    # years of closed ones (hub.observability.metrics): each count is covered by its index.
    Index("ix_clocks_state_kind_breached", "state", "kind", "breached"),
    Index("ix_clocks_breached_kind", "breached", "kind"),
    # The escalation inbox: breached clocks nobody acknowledged (ListClocks).
    Index("ix_clocks_breached_acknowledged_at", "breached", "acknowledged_at"),
    # ListCases' deadline order: the open clocks by deadline, and a case's open clocks.
    Index("ix_clocks_state_deadline_at", "state", "deadline_at", "case_id"),
    Index("ix_clocks_state_case_id_deadline_at", "state", "case_id", "deadline_at"),
)

# The blacklist and punishment list (docs/blacklist.md). An entry's subject, name and reason
# are sealed inside `clear_wire`, the CLEAR-form ListEntry as copies receive it, so a snapshot
# opens one value per entry and sends it as is; `subject_token` (HMAC under the list key) finds
# a subject without opening anything. The added and ended versions let a snapshot be read at
# one version in pages while changes go on.
list_entries = Table(
    "list_entries",
    metadata,
    Column("entry_id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("subject_token", LargeBinary(32), nullable=False, index=True),
    Column("basis", String(32), nullable=False),
    Column("source_case_id", String(40), ForeignKey("cases.case_id"), nullable=False, index=True),
    Column("listed_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("listed_by", Code, nullable=False),
    Column("ended_at", UTCDateTime()),
    Column("end_kind", String(16), nullable=False),
    Column("end_reason", SealedText("list_entries.end_reason"), nullable=False),
    Column("added_version", BigInteger, nullable=False),
    Column("ended_version", BigInteger),
    Column("clear_wire", Sealed("list_entries.clear_wire"), nullable=False),
    Column("token_wire", LargeBinary, nullable=False),
    Index("ix_list_entries_live_expiry", "ended_version", "expires_at"),
    Index("ix_list_entries_added_version", "added_version", unique=True),
)

# Every addition, removal and expiry, numbered: a copy catches up from its version.
list_changes = Table(
    "list_changes",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("op", String(16), nullable=False),
    Column("entry_id", String(40), ForeignKey("list_entries.entry_id"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

# One row: the list's version, its live entries and their digests in both forms, moved in the
# transaction of every change (and locked by it, so versions are gapless across hubs).
list_state = Table(
    "list_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("entry_count", BigInteger, nullable=False),
    Column("clear_digest", LargeBinary(32), nullable=False),
    Column("token_digest", LargeBinary(32), nullable=False),
    Column("list_key_id", String(64), nullable=False),
)

appeals = Table(
    "appeals",
    metadata,
    Column("appeal_id", String(40), primary_key=True),
    Column("reference", String(40), nullable=False, index=True),
    Column("reference_kind", _enum(ReferenceKind, "appeal_reference_kind"), nullable=False),
    Column("case_id", String(40), ForeignKey("cases.case_id"), nullable=False, index=True),
    Column("appellant", Code, nullable=False),
    Column("grounds", SealedText("appeals.grounds"), nullable=False),
    Column("documents", Text, nullable=False),
    Column("filed_at", UTCDateTime(), nullable=False),
    Column("decide_by", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("state", _enum(AppealState, "appeal_state"), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", Code, nullable=False),
    Column("reason", SealedText("appeals.reason"), nullable=False),
    Column("release_orders", Text, nullable=False),
    Column("removed_entries", Text, nullable=False),
)

leads = Table(
    "leads",
    metadata,
    Column("lead_id", String(40), primary_key=True),
    Column("submitter", Code, ForeignKey("institutions.code"), nullable=False),
    Column("grade", String(8), nullable=False),
    Column("submitted_grade", String(8), nullable=False),
    Column("grounds", SealedText("leads.grounds"), nullable=False),
    Column("accounts_json", SealedText("leads.accounts_json"), nullable=False),
    Column("transactions_json", SealedText("leads.transactions_json"), nullable=False),
    Column("evidence_json", Text, nullable=False),
    Column("submitted_at", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("state", _enum(LeadState, "lead_state"), nullable=False),
    Column("triage_clock_id", String(40), nullable=False),
    Column("triage_by", UTCDateTime()),
    Column("outcome", _enum(LeadOutcome, "lead_outcome"), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", Code, nullable=False),
    Column("case_id", String(40), nullable=False),
    Column("list_entry_id", String(40), nullable=False),
    Column("warning_id", String(40), nullable=False),
    Column("reason", SealedText("leads.reason"), nullable=False),
    Column("exchanges_json", SealedText("leads.exchanges_json"), nullable=False),
    Column("grade_rank", Integer, nullable=False),
    Column("queue_at", UTCDateTime(), nullable=False),
    # ListLeads' order: the grade, then the triage deadline (docs/leads.md).
    Index("ix_leads_queue", "grade_rank", "queue_at", "lead_id"),
    Index("ix_leads_submitter_submitted_at", "submitter", "submitted_at"),
)

# Every account a lead names, without the holder: the links between leads.
lead_accounts = Table(
    "lead_accounts",
    metadata,
    Column("lead_id", String(40), ForeignKey("leads.lead_id"), primary_key=True),
    Column("institution_code", Code, primary_key=True),
    Column("account_number", Account, primary_key=True),
    Index("ix_lead_accounts_account", "institution_code", "account_number"),
)

# Warnings (docs/warnings.md). Their clocks are rows of `clocks` whose case_id is the
# warning id (hub/service/commands/warning.py).
warnings = Table(
    "warnings",
    metadata,
    Column("warning_id", String(40), primary_key=True),
    Column("sender", Code, nullable=False),
    Column("addressee", Code, nullable=False),
    Column("account_institution", Code, nullable=False),
    Column("account_number", Account, nullable=False),
    Column("holder_name", SealedText("warnings.holder_name"), nullable=False),
    Column("fraud_type", String(64), nullable=False),
    Column("counterparty_institution", Code, nullable=False),
    Column("counterparty_account", Account, nullable=False),
    Column("counterparty_name", SealedText("warnings.counterparty_name"), nullable=False),
    Column("amount_at_risk_fen", Money, nullable=False),
    Column("grade", _enum(Grade, "warning_grade"), nullable=False),
    Column("text", SealedText("warnings.text"), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("contact_by", UTCDateTime()),
    Column("outcome_by", UTCDateTime()),
    Column("state", _enum(WarningState, "warning_state"), nullable=False),
    Column("acknowledged_at", UTCDateTime()),
    Column("acknowledge_note", SealedText("warnings.acknowledge_note"), nullable=False),
    Column("outcome", _enum(Outcome, "warning_outcome")),
    Column("outcome_at", UTCDateTime()),
    Column("loss_prevented_fen", Money, nullable=False),
    Column("outcome_text", SealedText("warnings.outcome_text"), nullable=False),
    Column("outcome_message_id", String(128), nullable=False),
    Column("case_id", String(40), nullable=False),
    Column("grade_reason", SealedText("warnings.grade_reason"), nullable=False),
    Column("graded_at", UTCDateTime()),
    Column("lead_id", String(40), nullable=False, server_default=""),
    Index("ix_warnings_sent_at_warning_id", "sent_at", "warning_id"),
    Index("ix_warnings_addressee_sent_at", "addressee", "sent_at"),
    Index("ix_warnings_sender_sent_at", "sender", "sent_at"),
    Index("ix_warnings_outcome_at", "outcome_at"),
    Index("ix_warnings_acknowledged_at", "acknowledged_at"),
)

# The SLA log: every clock start, step and stop, for people and auditors.
sla_log = Table(
    "sla_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("clock_id", String(40), ForeignKey("clocks.clock_id"), nullable=False, index=True),
    Column("case_id", String(40), nullable=False, index=True),
    Column("order_id", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("due_at", UTCDateTime()),
    Column("responsible", Code, nullable=False),
    Column("late_seconds", Float, nullable=False),
    Column("detail", Text, nullable=False),
)


def sealed_tables() -> list[SealedTable]:
    """Every table with sealed columns, for `stophub datakeys reencrypt` and `status`."""
    found = []
    for t in metadata.sorted_tables:
        cols = tuple(c.name for c in t.columns if isinstance(c.type, SealedType))
        if cols:
            found.append(SealedTable(t.name, tuple(c.name for c in t.primary_key), cols))
    return found


def _check_sealed_contexts() -> None:
    # A context that names another column would still work, until someone copies the
    # context string around: keep each bound to exactly its own table.column.
    for t in metadata.tables.values():
        for c in t.columns:
            if isinstance(c.type, SealedType) and c.type.context != f"{t.name}.{c.name}":
                raise RuntimeError(f"{t.name}.{c.name} is sealed as {c.type.context!r}")


_check_sealed_contexts()

_mapped = False


def map_domain() -> None:
    """Map the domain classes once per process; idempotent."""
    global _mapped
    if _mapped:
        return
    _mapped = True
    mapper_registry.map_imperatively(InstitutionKey, institution_keys)
    mapper_registry.map_imperatively(DutyContact, duty_contacts)
    mapper_registry.map_imperatively(
        Institution,
        institutions,
        properties={
            "keys": relationship(
                InstitutionKey,
                order_by=(institution_keys.c.created_at, institution_keys.c.key_id),
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
            "contacts": relationship(
                DutyContact,
                order_by=duty_contacts.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
        },
    )
    mapper_registry.map_imperatively(FraudTransaction, fraud_transactions)
    mapper_registry.map_imperatively(TransactionFact, transaction_facts)
    mapper_registry.map_imperatively(OnwardTransfer, onward_transfers)
    mapper_registry.map_imperatively(CaseEvent, case_events)
    mapper_registry.map_imperatively(Claim, distribution_claims)
    mapper_registry.map_imperatively(Objection, distribution_objections)
    mapper_registry.map_imperatively(
        Distribution,
        distributions,
        properties={
            "claims": relationship(
                Claim,
                order_by=distribution_claims.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
            "objections": relationship(
                Objection,
                order_by=distribution_objections.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
        },
    )
    mapper_registry.map_imperatively(
        Order,
        orders,
        properties={
            "facts": relationship(
                TransactionFact,
                order_by=transaction_facts.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
            "onward": relationship(
                OnwardTransfer,
                order_by=onward_transfers.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
        },
    )
    mapper_registry.map_imperatively(
        Case,
        cases,
        properties={
            "transactions": relationship(
                FraudTransaction,
                order_by=fraud_transactions.c.position,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
            "orders": relationship(
                Order,
                order_by=orders.c.order_id,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
            "events": relationship(
                CaseEvent,
                order_by=case_events.c.sequence,
                lazy="selectin",
                cascade="all, delete-orphan",
            ),
        },
    )
    mapper_registry.map_imperatively(AutoStopRule, auto_stop_rules)
    mapper_registry.map_imperatively(CaseClock, clocks)
    mapper_registry.map_imperatively(Appeal, appeals)
    mapper_registry.map_imperatively(Lead, leads)
    mapper_registry.map_imperatively(Warning, warnings)
