"""Who may call what: the permission matrix, in one place.

A decision depends on three things: the kind of the calling institution, the RPC, and, for an
RPC about one case or order, the caller's relation to it. docs/permissions.md writes the same
matrix down for people; tests/unit/test_permissions.py reads that document and walks every cell
through the hub, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hub.domain.cases import Case
from hub.domain.errors import PermissionDenied
from hub.domain.institutions import InstitutionKind


class Relation(StrEnum):
    """The caller's part in the case (or order) a call is about."""

    # The call is about no case in particular (a new report, a list, the registry).
    NONE = "-"
    # The caller reported the case.
    REPORTER = "reporter"
    # The caller holds an order in the case; for AnswerOrder, it is the order's addressee.
    ADDRESSEE = "addressee"
    # A member with no part in the case.
    OUTSIDER = "outsider"


class Access(StrEnum):
    ALLOW = "allow"
    # Allowed, but the answer covers only what is the caller's own (its reports, its clocks).
    OWN = "own"
    DENY = "deny"


@dataclass(frozen=True)
class Rule:
    access: Access
    # The ErrorInfo reason of a refusal, and the sentence after "<caller> may not <rpc>: ".
    reason: str = ""
    why: str = ""


BANK = InstitutionKind.BANK
PAYMENT = InstitutionKind.PAYMENT_INSTITUTION
CENTRE = InstitutionKind.ANTI_FRAUD_CENTRE
REGULATOR = InstitutionKind.REGULATOR
AUDITOR = InstitutionKind.AUDITOR

# The kinds that call the hub, in the order the document's columns list them.
KINDS: tuple[InstitutionKind, ...] = (BANK, PAYMENT, CENTRE, REGULATOR, AUDITOR)
ACCOUNT_KEEPERS = (BANK, PAYMENT)
READERS = (CENTRE, REGULATOR, AUDITOR)

ALLOW = Rule(Access.ALLOW)
OWN = Rule(Access.OWN)


def _deny(reason: str, why: str) -> Rule:
    return Rule(Access.DENY, reason, why)


_KEEPERS_ONLY = _deny(
    "KIND_NOT_ALLOWED", "only banks and payment institutions report, verify and answer orders"
)
_CENTRE_ONLY = _deny("KIND_NOT_ALLOWED", "only the anti-fraud centre issues orders and rules")
_NOT_REPORTER = _deny(
    "NOT_REPORTING_INSTITUTION", "only the institution that reported a case verifies it"
)
_NOT_ADDRESSEE = _deny("NOT_ADDRESSEE", "only the institution an order is addressed to answers it")
_TRAIL_NOT_SHARED = _deny(
    "TRAIL_NOT_SHARED",
    "the money trail names other institutions' accounts; a bank or payment institution reads "
    "the trails of the cases it reported",
)
_CENTRE_DECIDES = _deny(
    "KIND_NOT_ALLOWED", "only the anti-fraud centre starts and decides distributions"
)
_CENTRE_LISTS = _deny(
    "KIND_NOT_ALLOWED", "only the anti-fraud centre publishes and removes listings"
)
_HOLDER_APPEALS = _deny(
    "KIND_NOT_ALLOWED",
    "an appeal comes from the bank or payment institution that keeps the holder's account",
)
_CENTRE_DECIDES_APPEALS = _deny("KIND_NOT_ALLOWED", "only the anti-fraud centre decides appeals")
_READERS_ONLY = _deny(
    "KIND_NOT_ALLOWED",
    "the audit log is read by the anti-fraud centre, the regulator and auditors",
)
_READ_ONLY = _deny("KIND_NOT_ALLOWED", "the regulator and auditors read; they file nothing")
_ACKNOWLEDGERS = _deny(
    "KIND_NOT_ALLOWED",
    "a breach is acknowledged by the anti-fraud centre or by the institution responsible for "
    "the clock",
)
_MEMBERS_HAND_LEADS = _deny(
    "KIND_NOT_ALLOWED", "a lead comes from a bank or payment institution's own monitoring"
)
_CENTRE_TRIAGES = _deny("KIND_NOT_ALLOWED", "only the anti-fraud centre triages and grades leads")
_MEMBER_ANSWERS = _deny(
    "KIND_NOT_ALLOWED", "the member that handed over a lead answers the centre's questions"
)
_CENTRE_GRADES = _deny("KIND_NOT_ALLOWED", "only the anti-fraud centre changes a case's grade")
_WARNERS = _deny(
    "KIND_NOT_ALLOWED",
    "warnings are sent by the anti-fraud centre and by banks and payment institutions",
)
_WARNED = _deny(
    "KIND_NOT_ALLOWED",
    "a warning is acknowledged and closed by its addressee: a bank, a payment institution or "
    "the anti-fraud centre",
)
_CENTRE_GRADES_WARNINGS = _deny("KIND_NOT_ALLOWED", "only the anti-fraud centre regrades a warning")
_NOT_PARTY = _deny(
    "NOT_PARTY_TO_CASE",
    "a bank or payment institution reads only the cases it reported or holds an order in",
)

CASE_RELATIONS = (Relation.REPORTER, Relation.ADDRESSEE, Relation.OUTSIDER)
# Which relations each kind can have to a case: the centre, the regulator and auditors report
# nothing and are addressed no orders.
POSSIBLE: dict[InstitutionKind, tuple[Relation, ...]] = {
    BANK: CASE_RELATIONS,
    PAYMENT: CASE_RELATIONS,
    CENTRE: (Relation.OUTSIDER,),
    REGULATOR: (Relation.OUTSIDER,),
    AUDITOR: (Relation.OUTSIDER,),
}


def _same(rule: Rule, kinds: tuple[InstitutionKind, ...]) -> dict[InstitutionKind, Rule]:
    return dict.fromkeys(kinds, rule)


def _case_scoped(
    keepers: dict[Relation, Rule], readers: Rule
) -> dict[tuple[InstitutionKind, Relation], Rule]:
    cells: dict[tuple[InstitutionKind, Relation], Rule] = {}
    for kind in KINDS:
        for relation in POSSIBLE[kind]:
            cells[kind, relation] = keepers[relation] if kind in ACCOUNT_KEEPERS else readers
    return cells


def _plain(rules: dict[InstitutionKind, Rule]) -> dict[tuple[InstitutionKind, Relation], Rule]:
    return {(kind, Relation.NONE): rule for kind, rule in rules.items()}


MATRIX: dict[str, dict[tuple[InstitutionKind, Relation], Rule]] = {
    "CreateReport": _plain({**_same(ALLOW, ACCOUNT_KEEPERS), **_same(_KEEPERS_ONLY, READERS)}),
    "VerifyReport": _case_scoped(
        {
            Relation.REPORTER: ALLOW,
            Relation.ADDRESSEE: _NOT_REPORTER,
            Relation.OUTSIDER: _NOT_REPORTER,
        },
        _KEEPERS_ONLY,
    ),
    "GetCase": _case_scoped(
        {Relation.REPORTER: ALLOW, Relation.ADDRESSEE: OWN, Relation.OUTSIDER: _NOT_PARTY},
        ALLOW,
    ),
    "ListCases": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "IssueOrder": _plain(
        {
            **_same(_CENTRE_ONLY, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_ONLY,
            AUDITOR: _CENTRE_ONLY,
        }
    ),
    "AnswerOrder": _case_scoped(
        {
            Relation.REPORTER: _NOT_ADDRESSEE,
            Relation.ADDRESSEE: ALLOW,
            Relation.OUTSIDER: _NOT_ADDRESSEE,
        },
        _KEEPERS_ONLY,
    ),
    "SetAutoStopRule": _plain(
        {
            **_same(_CENTRE_ONLY, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_ONLY,
            AUDITOR: _CENTRE_ONLY,
        }
    ),
    "GetInstitution": _plain(_same(ALLOW, KINDS)),
    "ListInstitutions": _plain(_same(ALLOW, KINDS)),
    "ListClocks": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "GetOutcomeFigures": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "AcknowledgeBreach": _plain(
        {
            **_same(OWN, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _ACKNOWLEDGERS,
            AUDITOR: _ACKNOWLEDGERS,
        }
    ),
    "StreamDeliveries": _plain(_same(OWN, KINDS)),
    "GetCaseTrail": _case_scoped(
        {
            Relation.REPORTER: ALLOW,
            Relation.ADDRESSEE: _TRAIL_NOT_SHARED,
            Relation.OUTSIDER: _NOT_PARTY,
        },
        ALLOW,
    ),
    "StartDistribution": _plain(
        {
            **_same(_CENTRE_DECIDES, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_DECIDES,
            AUDITOR: _CENTRE_DECIDES,
        }
    ),
    "ObjectToDistribution": _plain(
        {
            **_same(ALLOW, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _READ_ONLY,
            AUDITOR: _READ_ONLY,
        }
    ),
    "DecideDistribution": _plain(
        {
            **_same(_CENTRE_DECIDES, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_DECIDES,
            AUDITOR: _CENTRE_DECIDES,
        }
    ),
    "GetDistribution": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "PublishListEntry": _plain(
        {
            **_same(_CENTRE_LISTS, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_LISTS,
            AUDITOR: _CENTRE_LISTS,
        }
    ),
    "RemoveListEntry": _plain(
        {
            **_same(_CENTRE_LISTS, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_LISTS,
            AUDITOR: _CENTRE_LISTS,
        }
    ),
    "SyncList": _plain(_same(ALLOW, KINDS)),
    "CheckList": _plain(_same(ALLOW, KINDS)),
    "FileAppeal": _plain(
        {
            **_same(ALLOW, ACCOUNT_KEEPERS),
            CENTRE: _HOLDER_APPEALS,
            REGULATOR: _HOLDER_APPEALS,
            AUDITOR: _HOLDER_APPEALS,
        }
    ),
    "DecideAppeal": _plain(
        {
            **_same(_CENTRE_DECIDES_APPEALS, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_DECIDES_APPEALS,
            AUDITOR: _CENTRE_DECIDES_APPEALS,
        }
    ),
    "GetAppeal": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "ListAppeals": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "SendWarning": _plain(
        {**_same(ALLOW, ACCOUNT_KEEPERS), CENTRE: ALLOW, REGULATOR: _WARNERS, AUDITOR: _WARNERS}
    ),
    **{
        rpc: _plain(
            {**_same(OWN, ACCOUNT_KEEPERS), CENTRE: ALLOW, REGULATOR: _WARNED, AUDITOR: _WARNED}
        )
        for rpc in ("AcknowledgeWarning", "ReportWarningOutcome")
    },
    "GetWarning": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "ListWarnings": _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)}),
    "SetWarningGrade": _plain(
        {
            **_same(_CENTRE_GRADES_WARNINGS, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_GRADES_WARNINGS,
            AUDITOR: _CENTRE_GRADES_WARNINGS,
        }
    ),
    "SetCaseGrade": _plain(
        {
            **_same(_CENTRE_GRADES, ACCOUNT_KEEPERS),
            CENTRE: ALLOW,
            REGULATOR: _CENTRE_GRADES,
            AUDITOR: _CENTRE_GRADES,
        }
    ),
    "SubmitLead": _plain({**_same(ALLOW, ACCOUNT_KEEPERS), **_same(_MEMBERS_HAND_LEADS, READERS)}),
    **{
        rpc: _plain(
            {
                **_same(_CENTRE_TRIAGES, ACCOUNT_KEEPERS),
                CENTRE: ALLOW,
                REGULATOR: _CENTRE_TRIAGES,
                AUDITOR: _CENTRE_TRIAGES,
            }
        )
        for rpc in ("TriageLead", "SetLeadGrade")
    },
    "AddLeadInformation": _plain(
        {**_same(OWN, ACCOUNT_KEEPERS), **_same(_MEMBER_ANSWERS, READERS)}
    ),
    # A member reads only the leads it handed over (another's is NOT_FOUND).
    **{
        rpc: _plain({**_same(OWN, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)})
        for rpc in ("GetLead", "ListLeads")
    },
    **{
        rpc: _plain({**_same(_READERS_ONLY, ACCOUNT_KEEPERS), **_same(ALLOW, READERS)})
        for rpc in ("ListAuditEntries", "GetInclusionProof")
    },
    # Every member witnesses the log: it keeps the newest checkpoint it saw and proves the
    # next one an extension of it (docs/witness.md). Checkpoints and consistency proofs hold
    # hashes only, nothing about any case.
    **{rpc: _plain(_same(ALLOW, KINDS)) for rpc in ("GetLogCheckpoint", "GetConsistencyProof")},
}

# Calls that change nothing; what the regulator and auditors are limited to.
READ_ONLY = frozenset(
    {
        "GetCase",
        "ListCases",
        "GetInstitution",
        "ListInstitutions",
        "ListClocks",
        "GetOutcomeFigures",
        "GetCaseTrail",
        "GetDistribution",
        "SyncList",
        "CheckList",
        "GetAppeal",
        "ListAppeals",
        "GetLead",
        "ListLeads",
        "GetWarning",
        "ListWarnings",
        "ListAuditEntries",
        "GetLogCheckpoint",
        "GetInclusionProof",
        "GetConsistencyProof",
    }
)


def rule_for(rpc: str, kind: InstitutionKind, relation: Relation = Relation.NONE) -> Rule:
    cells = MATRIX.get(rpc)
    if cells is None:
        raise KeyError(f"{rpc} has no row in the permission matrix")
    rule = cells.get((kind, relation))
    if rule is None:
        # A kind the matrix does not name (the hub itself) or a relation it cannot have.
        return _deny("KIND_NOT_ALLOWED", f"a {kind.value} makes no {rpc} call")
    return rule


def authorize(
    rpc: str, caller: str, kind: InstitutionKind, relation: Relation = Relation.NONE
) -> Access:
    """Raise PermissionDenied unless the matrix allows `caller` this call; return the access
    (ALLOW, or OWN when the answer must be limited to the caller's own)."""
    rule = rule_for(rpc, kind, relation)
    if rule.access is Access.DENY:
        raise PermissionDenied(
            rule.reason,
            f"{caller} ({kind.value}"
            + ("" if relation in (Relation.NONE,) else f", {relation.value} of this case")
            + f") may not call {rpc}: {rule.why} (see docs/permissions.md)",
        )
    return rule.access


def refuse_kind(rpc: str, caller: str, kind: InstitutionKind) -> None:
    """Before a case is loaded: refuse a kind that no relation to any case would allow, so it
    learns nothing about which cases exist."""
    cells = MATRIX[rpc]
    relations = [relation for (k, relation) in cells if k is kind]
    if not relations:
        authorize(rpc, caller, kind)
    if all(cells[kind, relation].access is Access.DENY for relation in relations):
        authorize(rpc, caller, kind, relations[0])


def relation_of(case: Case, code: str, order_id: str | None = None) -> Relation:
    """`code`'s part in `case`; with `order_id`, ADDRESSEE means that order's addressee."""
    if order_id is not None:
        order = next((o for o in case.orders if o.order_id == order_id), None)
        if order is not None and order.addressed_to == code:
            return Relation.ADDRESSEE
        return Relation.REPORTER if case.reporting_institution == code else Relation.OUTSIDER
    if case.reporting_institution == code:
        return Relation.REPORTER
    if any(o.addressed_to == code for o in case.orders):
        return Relation.ADDRESSEE
    return Relation.OUTSIDER
