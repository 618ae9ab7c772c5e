"""The centre's desk over HTTP (no browser): the queue by time left with its colours, claims
and "next case", orders issued from a case page reaching the hub with the person inside the
signed message, maker-checker, viewers, expiry, refusals, CSRF, the list, appeals and
distributions. Every check of an action looks at what the HUB recorded."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.console.models import Claim, Proposal
from adapters.sdk import HubClient
from stophub.v1 import account_pb2, appeal_pb2, case_pb2, grade_pb2, order_pb2, returns_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network
from tests.e2e.wire_helpers import VICTIM

# One worker runs the whole module: one hub and console for the module.
pytestmark = pytest.mark.xdist_group("console_centre")

ROW = re.compile(r'<tr class="(\w+)" data-case="([^"]+)" data-urgency="(\w+)">')
VALUE = re.compile(r'<(?:input|textarea)[^>]*name="(\w+)"[^>]*?(?:value="([^"]*)")?[^>]*>')


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(Path(tmp_path_factory.mktemp("centre")), ["CENTRE"]) as network:
        yield network


@pytest.fixture(scope="module")
def hub(net: ConsoleNetwork) -> dict[str, HubClient]:
    return {code: net.client(code) for code in ("CENTRE", "BANKA", "BANKB")}


def person(net: ConsoleNetwork, username: str) -> Browserless:
    b = Browserless(net.consoles["CENTRE"])
    assert b.login(username).status_code == 303
    return b


def report(net: ConsoleNetwork, payee: str, amounts: tuple[int, ...]) -> case_pb2.Report:
    now = net.clock.now()
    pb = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
    )
    pb.victim_report_time.FromDatetime(now)
    for i, amount in enumerate(amounts):
        t = pb.transactions.add(
            amount_fen=amount,
            payer=VICTIM,
            payee=account_pb2.AccountRef(
                institution_code="BANKB", account_number=payee, holder_name="Li Si"
            ),
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference=f"TX-{payee}-{i}",
        )
        t.transaction_time.FromDatetime(now - timedelta(minutes=10 - i))
    return pb


def new_case(
    net: ConsoleNetwork,
    hub: dict[str, HubClient],
    payee: str,
    amounts: tuple[int, ...] = (500_000,),
) -> str:
    bank = hub["BANKA"]
    case = net.run(bank.create_report(report(net, payee, amounts)))
    net.run(bank.verify_report(case.case_id, confirmed=True))
    return case.case_id


def get_case(net: ConsoleNetwork, hub: dict[str, HubClient], case_id: str) -> case_pb2.Case:
    return net.run(hub["CENTRE"].get_case(case_id))


def form_values(html: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for m in re.finditer(r"<input[^>]*>", html):
        tag = m.group(0)
        name = re.search(r'name="(\w+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and name.group(1) != "csrf" and 'type="radio"' not in tag:
            values[name.group(1)] = value.group(1) if value else ""
    for m in re.finditer(r'<textarea name="(\w+)"[^>]*>([^<]*)</textarea>', html):
        values[m.group(1)] = m.group(2)
    return values


def proposal_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/proposals/"), location
    return location.removeprefix("/proposals/")


def approve(net: ConsoleNetwork, username: str, proposal_id: str) -> httpx.Response:
    return person(net, username).post(f"/proposals/{proposal_id}/decide", {"decision": "approve"})


def answer_hold(net: ConsoleNetwork, hub: dict[str, HubClient], order_id: str, fen: int) -> None:
    net.run(
        hub["BANKB"].answer_order(
            order_pb2.ExecutionResult(
                order_id=order_id,
                status=order_pb2.EXECUTION_STATUS_EXECUTED,
                amount_held_fen=fen,
            )
        )
    )


def issue_stop(net: ConsoleNetwork, duty: Browserless, case_id: str) -> httpx.Response:
    page = duty.get(f"/cases/{case_id}/order/stop")
    assert page.status_code == 200, page.text
    return duty.post(f"/cases/{case_id}/order/stop", form_values(page.text))


def event_of(case: case_pb2.Case, kind: str, order_id: str = "") -> case_pb2.CaseEvent:
    found = [e for e in case.events if e.kind == kind and (not order_id or e.order_id == order_id)]
    assert found, [(e.kind, e.order_id) for e in case.events]
    return found[-1]


def test_queue_sorted_by_time_left_with_urgency_colours(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    first = new_case(net, hub, "6222020000001001")
    net.advance(timedelta(minutes=4))
    second = new_case(net, hub, "6222020000001001")
    duty = person(net, "duty")

    def rows() -> dict[str, tuple[int, str]]:
        page = duty.get("/queue")
        assert page.status_code == 200, page.text
        return {m.group(2): (i, m.group(3)) for i, m in enumerate(ROW.finditer(page.text))}

    seen = rows()
    # The stop-issue clock (10 minutes) of the first case has 6 left, the second's 10.
    assert seen[first][0] < seen[second][0]
    # Every page names the most urgent case at its top, with its countdown.
    top = min(seen, key=lambda case_id: seen[case_id][0])
    net.run(net.consoles["CENTRE"].desk.link.refresh_deadline())
    assert f'Most urgent: <a href="/cases/{top}">' in duty.get("/journal").text
    assert seen[first][1] == "green" and seen[second][1] == "green"
    net.advance(timedelta(minutes=3))  # 3 of 10 left: yellow; 7 of 10: green
    seen = rows()
    assert (seen[first][1], seen[second][1]) == ("yellow", "green")
    net.advance(timedelta(minutes=2, seconds=30))  # 30 s of 10 minutes left: red
    seen = rows()
    assert seen[first][1] == "red" and seen[second][1] == "yellow"
    # Both reports paid the same account: the hub links the cases and tells the centre, whose
    # queue marks them (once the notice arrived on the console's delivery stream).
    assert get_case(net, hub, second).linked_cases
    for _ in range(50):
        page = duty.get("/queue").text
        row = page[page.index(f'data-case="{second}"') :].split("</tr>")[0]
        if "tag linked" in row:
            break
        time.sleep(0.1)
    assert "tag linked" in row
    # Graded red by the centre, the later case goes to the top though its deadline is later
    # (docs/grades.md: red, yellow, green, ungraded, each by time left).
    net.run(hub["CENTRE"].set_case_grade(second, grade_pb2.GRADE_RED, "an elderly victim"))
    seen = rows()
    assert seen[second][0] < seen[first][0]


def test_claim_and_next_case(net: ConsoleNetwork, hub: dict[str, HubClient]) -> None:
    new_case(net, hub, "6222020000002001")
    duty, boss = person(net, "duty"), person(net, "boss")
    queue = duty.get("/queue").text
    unclaimed = [
        m.group(2)
        for m in ROW.finditer(queue)
        if '<td class="claimed"></td>' in queue[m.end() :].split("</tr>")[0]
    ]
    assert unclaimed
    answer = duty.post("/queue/next", {})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/cases/{unclaimed[0]}"
    desk = net.consoles["CENTRE"].desk
    with desk.db() as s:
        claim = s.get(Claim, unclaimed[0])
        assert claim is not None and claim.username == "duty"
    mine = duty.get("/queue?mine=1").text
    assert [m.group(2) for m in ROW.finditer(mine)] == [unclaimed[0]]
    # Somebody else cannot take it; they claim another one by hand.
    taken = boss.post("/queue/claim", {"case_id": unclaimed[0], "back": "/queue"})
    assert taken.status_code == 409 and "duty claimed this case first" in taken.text
    if len(unclaimed) > 1:
        assert boss.post("/queue/claim", {"case_id": unclaimed[1]}).status_code == 303
        assert f'data-case="{unclaimed[1]}"' in boss.get("/queue?mine=1").text
    # The case page says who holds it; the holder releases it.
    assert "You work this case." in duty.get(f"/cases/{unclaimed[0]}").text
    assert duty.post("/queue/release", {"case_id": unclaimed[0]}).status_code == 303
    with desk.db() as s:
        assert s.get(Claim, unclaimed[0]) is None


def test_stop_from_the_case_page_reaches_the_hub_with_the_officer(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    case_id = new_case(net, hub, "6222020000003001", (300_000, 200_000))
    duty = person(net, "duty")
    case_page = duty.get(f"/cases/{case_id}").text
    assert f"/cases/{case_id}/order/stop?institution=BANKB" in case_page
    form = form_values(duty.get(f"/cases/{case_id}/order/stop").text)
    assert form["institution"] == "BANKB" and form["account"] == "6222020000003001"
    assert form["amount"] == "5000.00" and len(form["transactions"].splitlines()) == 2
    answer = duty.post(f"/cases/{case_id}/order/stop", form)
    assert answer.status_code == 303 and answer.headers["location"] == f"/cases/{case_id}"
    case = get_case(net, hub, case_id)
    [stop] = case.orders
    assert stop.kind == order_pb2.ORDER_KIND_STOP and stop.instruction.stop.amount_fen == 500_000
    issued = event_of(case, "order.issued", stop.order_id)
    assert (issued.operator, issued.approver) == ("duty", "")


def test_freeze_proposed_by_duty_approved_by_boss_and_no_self_approval(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    case_id = new_case(net, hub, "6222020000004001")
    duty = person(net, "duty")
    assert issue_stop(net, duty, case_id).status_code == 303
    [stop] = get_case(net, hub, case_id).orders
    answer_hold(net, hub, stop.order_id, 500_000)
    form = form_values(duty.get(f"/cases/{case_id}/order/freeze?stop={stop.order_id}").text)
    assert form["stop_order_id"] == stop.order_id and form["amount"] == "5000.00"
    form.update(filed_case_number="2026-GA-0042", approving_authority="PSB Chaoyang")
    form["term_months"] = "6"
    proposal = proposal_of(duty.post(f"/cases/{case_id}/order/freeze", form))
    assert len(get_case(net, hub, case_id).orders) == 1  # nothing sent before approval
    assert approve(net, "boss", proposal).status_code == 303
    case = get_case(net, hub, case_id)
    freeze = next(o for o in case.orders if o.kind == order_pb2.ORDER_KIND_FREEZE)
    issued = event_of(case, "order.issued", freeze.order_id)
    assert (issued.operator, issued.approver) == ("duty", "boss")

    # boss proposes a release; boss cannot approve it, boss2 can.
    boss = person(net, "boss")
    release = proposal_of(
        boss.post(
            f"/cases/{case_id}/order/release",
            {"target_order_id": freeze.order_id, "reason": "the holder proved the money his"},
        )
    )
    own = approve(net, "boss", release)
    assert own.status_code == 409 and "You made this proposal" in own.text
    assert not any(
        o.kind == order_pb2.ORDER_KIND_RELEASE for o in get_case(net, hub, case_id).orders
    )
    assert approve(net, "boss2", release).status_code == 303
    case = get_case(net, hub, case_id)
    released = next(o for o in case.orders if o.kind == order_pb2.ORDER_KIND_RELEASE)
    issued = event_of(case, "order.issued", released.order_id)
    assert (issued.operator, issued.approver) == ("boss", "boss2")


ACTION_POSTS: list[tuple[str, dict[str, Any]]] = [
    ("/queue/claim", {"case_id": "C1"}),
    ("/queue/release", {"case_id": "C1"}),
    ("/queue/next", {}),
    ("/cases/{case}/order/stop", {"institution": "BANKB"}),
    ("/cases/{case}/order/freeze", {}),
    ("/cases/{case}/order/release", {}),
    ("/cases/{case}/order/return", {}),
    ("/rule", {"rule_id": "R"}),
    ("/lists/publish", {"kind": "account"}),
    ("/lists/remove", {"entry_id": "E1", "reason": "x"}),
    ("/appeals/A1", {"decision": "reject", "reason": "x"}),
    ("/distributions/start", {"case_id": "C1"}),
    ("/distributions/D1/object", {"grounds": "x"}),
    ("/distributions/D1/decide", {"decision": "confirm"}),
]


def test_viewer_cannot_act_and_forms_need_their_token(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    case_id = new_case(net, hub, "6222020000005001")
    watch = person(net, "watch")
    assert watch.get("/queue").status_code == 200
    for path, data in ACTION_POSTS:
        answer = watch.post(path.format(case=case_id), data)
        assert answer.status_code == 403, path
    duty = person(net, "duty")
    form = form_values(duty.get(f"/cases/{case_id}/order/stop").text)
    no_token = duty.post(f"/cases/{case_id}/order/stop", form, csrf=False)
    assert no_token.status_code == 403
    assert not get_case(net, hub, case_id).orders


def test_hub_refusal_is_shown_with_what_was_typed(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    case_id = new_case(net, hub, "6222020000006001")
    duty = person(net, "duty")
    form = form_values(duty.get(f"/cases/{case_id}/order/stop").text)
    form.update(institution="NOBANK", holder="Wang <b>Wu</b>", note="typed by hand")
    answer = duty.post(f"/cases/{case_id}/order/stop", form)
    assert answer.status_code == 400
    assert "UNKNOWN_INSTITUTION" in answer.text and "not a member institution" in answer.text
    assert 'value="NOBANK"' in answer.text and 'value="typed by hand"' in answer.text
    assert "Wang &lt;b&gt;Wu&lt;/b&gt;" in answer.text
    assert not get_case(net, hub, case_id).orders
    # The console's own checks: an amount above the credits never leaves the console.
    form.update(institution="BANKB", amount="999999")
    local = duty.post(f"/cases/{case_id}/order/stop", form)
    assert local.status_code == 400 and 'value="999999"' in local.text
    assert not get_case(net, hub, case_id).orders


def test_proposal_expires_and_is_never_sent(net: ConsoleNetwork, hub: dict[str, HubClient]) -> None:
    case_id = new_case(net, hub, "6222020000007001")
    duty = person(net, "duty")
    proposal = proposal_of(
        duty.post(
            "/lists/publish",
            {
                "kind": "account",
                "institution": "BANKB",
                "account": "6222020000007001",
                "holder": "Li Si",
                "basis": "account_trader",
                "reason": "sold the account",
                "source_case_id": case_id,
            },
        )
    )
    net.advance(net.consoles["CENTRE"].desk.config.proposal_ttl + timedelta(seconds=1))
    boss = person(net, "boss")
    assert boss.get("/proposals").status_code == 200
    with net.consoles["CENTRE"].desk.db() as s:
        row = s.get(Proposal, proposal)
        assert row is not None and row.state == "expired"
    late = boss.post(f"/proposals/{proposal}/decide", {"decision": "approve"})
    assert late.status_code == 409
    check = boss.get("/lists/check?institution=BANKB&account=6222020000007001")
    assert "Not listed" in check.text


def test_list_publish_and_check(net: ConsoleNetwork, hub: dict[str, HubClient]) -> None:
    case_id = new_case(net, hub, "6222020000008001")
    duty = person(net, "duty")
    page = duty.get(f"/lists?case={case_id}&institution=BANKB&account=6222020000008001&holder=Li")
    assert page.status_code == 200 and f'value="{case_id}"' in page.text
    proposal = proposal_of(
        duty.post(
            "/lists/publish",
            {
                "kind": "account",
                "institution": "BANKB",
                "account": "6222020000008001",
                "holder": "Li Si",
                "basis": "account_trader",
                "reason": "rented the account out",
                "source_case_id": case_id,
            },
        )
    )
    assert approve(net, "boss", proposal).status_code == 303
    check = duty.get("/lists/check?institution=BANKB&account=6222020000008001")
    assert "Listed" in check.text and "rented the account out" in check.text
    listing = duty.get("/lists").text
    assert "6222020000008001" in listing and "live entries at list version" in listing
    # A form the hub would refuse: the console says what is wrong and keeps it.
    bad = duty.post("/lists/publish", {"kind": "person", "id_number": "123", "reason": "x"})
    assert bad.status_code == 400 and 'value="123"' in bad.text


def frozen_case(net: ConsoleNetwork, hub: dict[str, HubClient], payee: str) -> tuple[str, str]:
    """A case whose payee account Bank B stopped and then froze: (case id, freeze id)."""
    case_id = new_case(net, hub, payee)
    duty = person(net, "duty")
    assert issue_stop(net, duty, case_id).status_code == 303
    [stop] = get_case(net, hub, case_id).orders
    answer_hold(net, hub, stop.order_id, 500_000)
    form = form_values(duty.get(f"/cases/{case_id}/order/freeze?stop={stop.order_id}").text)
    form.update(filed_case_number="2026-GA-7", approving_authority="PSB", term_months="6")
    assert approve(net, "boss", proposal_of(duty.post(f"/cases/{case_id}/order/freeze", form)))
    freeze = next(
        o for o in get_case(net, hub, case_id).orders if o.kind == order_pb2.ORDER_KIND_FREEZE
    )
    answer_hold(net, hub, freeze.order_id, 500_000)
    return case_id, freeze.order_id


def test_appeal_is_listed_and_decided(net: ConsoleNetwork, hub: dict[str, HubClient]) -> None:
    case_id = new_case(net, hub, "6222020000009001")
    duty = person(net, "duty")
    assert issue_stop(net, duty, case_id).status_code == 303
    [stop] = get_case(net, hub, case_id).orders
    answer_hold(net, hub, stop.order_id, 500_000)
    appeal = net.run(hub["BANKB"].file_appeal(stop.order_id, "salary account, unrelated money"))
    for _ in range(50):  # the appeal notice reaches the console's delivery stream
        listed = duty.get("/appeals").text
        if appeal.appeal_id in listed:
            break
        time.sleep(0.1)
    assert appeal.appeal_id in listed
    page = duty.get(f"/appeals/{appeal.appeal_id}").text
    assert "salary account, unrelated money" in page and "6222020000009001" in page
    proposal = proposal_of(
        duty.post(
            f"/appeals/{appeal.appeal_id}",
            {"decision": "reject", "reason": "the money traces to the victim", "case_id": case_id},
        )
    )
    assert approve(net, "boss", proposal).status_code == 303
    decided = net.run(hub["CENTRE"].get_appeal(appeal.appeal_id))
    assert decided.state == appeal_pb2.APPEAL_STATE_REJECTED
    assert decided.reason == "the money traces to the victim"


def test_distribution_start(net: ConsoleNetwork, hub: dict[str, HubClient]) -> None:
    case_id, _freeze = frozen_case(net, hub, "6222020000010001")
    duty = person(net, "duty")
    page = duty.get(f"/distributions?case={case_id}&institution=BANKB&account=6222020000010001")
    assert page.status_code == 200
    form = form_values(page.text)
    assert form["case_id"] == case_id
    proposal = proposal_of(duty.post("/distributions/start", form))
    assert approve(net, "boss", proposal).status_code == 303
    with net.consoles["CENTRE"].desk.db() as s:
        row = s.get(Proposal, proposal)
        assert row is not None and row.state == "done", row.outcome
        match = re.match(r"distribution (\S+) started", row.outcome)
    assert match
    started = net.run(hub["CENTRE"].get_distribution(match.group(1)))
    assert started.case_id == case_id
    assert started.state in (
        returns_pb2.DISTRIBUTION_STATE_NOTICE,
        returns_pb2.DISTRIBUTION_STATE_DECIDED,
    )
    shown = duty.get(f"/distributions/{started.distribution_id}")
    assert shown.status_code == 200 and case_id in shown.text
    assert started.distribution_id in duty.get("/distributions").text


def test_auto_stop_rule_and_the_desk_in_chinese(
    net: ConsoleNetwork, hub: dict[str, HubClient]
) -> None:
    # Last in this file: once the rule is on, every verified case gets its stop by itself.
    duty = person(net, "duty")
    assert "has not sent a rule yet" in duty.get("/rule").text
    bad = duty.post("/rule", {"rule_id": "R1", "enabled": "1", "max_amount": "0", "max_layer": "1"})
    assert bad.status_code == 400 and 'value="R1"' in bad.text
    proposal = proposal_of(
        duty.post(
            "/rule",
            {"rule_id": "R1", "enabled": "1", "max_amount": "100000", "max_layer": "0"},
        )
    )
    assert approve(net, "boss2", proposal).status_code == 303
    shown = duty.get("/rule").text
    assert "auto-stop rule R1: on up to ¥100000.00" in shown and "boss2" in shown
    case = get_case(net, hub, new_case(net, hub, "6222020000011001"))
    [stop] = case.orders
    assert stop.auto_stop_rule_id == "R1"
    event = event_of(case, "order.issued", stop.order_id)
    assert event.actor == "HUB"  # issued by the hub under the rule the console signed
    assert duty.post("/language", {"language": "zh", "back": "/queue"}).status_code == 303
    queue = duty.get("/queue").text
    assert "下一个案件" in queue and "按剩余时间排列的未结案件" in queue
