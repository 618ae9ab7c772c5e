"""The hub's refusal reasons (docs/errors.md) an officer meets at the desk, each said as what
it means and what to do. The hub's own message is shown under it, word for word."""

from __future__ import annotations

# Reasons a person can act on. Technical ones (signatures, keys, certificates, clocks out of
# step) are left to the hub's message and TECHNICAL.
REASONS: dict[str, str] = {
    "ALREADY_ACKNOWLEDGED": "Someone has already acknowledged this breach.",
    "ALREADY_DECIDED": "This has already been decided.",
    "ALREADY_LISTED": "This account or person is already on the list.",
    "ALREADY_VERIFIED": "This report has already been verified.",
    "APPEAL_DECIDED": "This appeal has already been decided.",
    "APPEAL_PENDING": "An appeal about this is already waiting for a decision.",
    "CASE_ENDED": "The case has ended: nothing more can be done in it.",
    "CASE_NOT_FOUND": "There is no such case, or this institution may not see it.",
    "CASE_NOT_VERIFIED": "The reporting institution has not verified this report yet.",
    "DISTRIBUTION_OPEN": "A distribution of this money is already under way.",
    "ENTRY_ENDED": "This list entry has already ended.",
    "FREEZE_NOT_HOLDING": "The freeze holds no money any more.",
    "INSTITUTION_NOT_FOUND": "No member institution has this code.",
    "KIND_NOT_ALLOWED": "An institution of this kind may not do this.",
    "LISTING_CAP_REACHED": "The list has reached its limit for this kind of entry.",
    "NOTHING_FROZEN": "Nothing is frozen in this case.",
    "NOTHING_TO_APPEAL": "There is nothing of this institution's to appeal against here.",
    "NOTHING_TO_RELEASE": "The order holds nothing to release.",
    "NOTICE_RUNNING": "The public notice is still running: decide when it has ended.",
    "NOT_ADDRESSEE": "This order is not addressed to this institution.",
    "NOT_APPEALABLE": "This cannot be appealed against.",
    "NOT_BREACHED": "This clock has not been breached.",
    "NOT_ON_TRAIL": "That account is not on this case's money trail.",
    "NOT_PARTY_TO_CASE": "This institution has no part in that case.",
    "NOT_PARTY_TO_DISTRIBUTION": "This institution is not a party to that distribution.",
    "NOT_REPORTING_INSTITUTION": "Only the institution that reported the case may do this.",
    "NOT_RESPONSIBLE": "This institution is not responsible for that clock.",
    "NOT_UNDER_NOTICE": "That distribution is not under public notice.",
    "NOT_YOUR_ACCOUNT": "The account is not kept by this institution.",
    "NO_CLAIMS": "No victim has a claim on this money.",
    "ORDER_NOT_FOUND": "There is no such order.",
    "ORDER_NOT_PENDING": "This order has already been answered or has ended.",
    "RELEASE_PENDING": "A release of this order is already waiting for its answer.",
    "RETURN_PENDING": "A return from this freeze is already waiting for its answer.",
    "SHARED_ACCOUNT": "Several victims' money reached this account: share it by a distribution.",
    "STOP_LIMIT_REACHED": "The account already carries as many stops as allowed.",
    "STOP_NOT_HOLDING": "That stop holds no money any more.",
    "TRAIL_NOT_SHARED": "The money trail is not shared with this institution.",
    "UNKNOWN_INSTITUTION": "The institution named is not a member of the hub.",
    "PREVENTED_ABOVE_AT_RISK": "The loss prevented cannot be more than the amount at risk.",
    "WARNING_NOT_FOUND": "There is no such warning, or this institution may not see it.",
    "WARNING_CLOSED": "The warning's outcome was already reported: it takes nothing more.",
    "WARNING_ACKNOWLEDGED": "The warning was already acknowledged: report its outcome next.",
    "GRADE_UNCHANGED": "It already has this grade.",
    "LEAD_NOT_FOUND": "There is no such lead, or this institution may not see it.",
    "LEAD_CLOSED": "The lead was already accepted or dismissed: it takes nothing more.",
    "LEAD_WAITING_FOR_MEMBER": "The member has not answered the centre's question yet.",
    "NO_QUESTION_OPEN": "The centre has no question about this lead waiting for an answer.",
    "NOT_IN_LEAD": "That account is not one the lead names.",
    "INVALID_FIELD": "A value in the form is not accepted: see the field named below.",
    "DATABASE_UNAVAILABLE": "The hub could not reach its database: nothing was done. Try again.",
}
TECHNICAL = (
    "The hub refused the message for a technical reason: tell your system administrator, "
    "with the details below."
)
