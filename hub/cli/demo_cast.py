"""The demo's cast and props (hub/cli/demo_story.py tells the story): the members and their
accounts, case time running fast, a member's inbox, the victims' reports, the listings, the
appeals, and the steps the centre takes more than once."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from adapters.bank import BankAgent
from adapters.sdk import Delivery, DeliveryStream, HubClient, HubError, HubSignatureError
from hub.bootstrap import HubServer
from hub.crypto.keys import PrivateKey
from hub.domain.institutions import InstitutionKind
from hub.store.sql import SqlStore
from hub.system.calendar import missing_years
from hub.system.clock import SystemClock
from hub.system.policy import DEFAULT_POLICY, load_calendar
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    grade_pb2,
    order_pb2,
    warning_pb2,
)

CENTRE, BANK_A, BANK_B, PAYX = "CENTRE", "BANKA", "BANKB", "PAYX"
# A bank abroad: on the payment network, not a member of the hub.
ABROAD = "HKBANK"
MEMBERS = [
    (CENTRE, "Anti-Fraud Centre (demo city)", InstitutionKind.ANTI_FRAUD_CENTRE),
    (BANK_A, "Bank A", InstitutionKind.BANK),
    (BANK_B, "Bank B", InstitutionKind.BANK),
    (PAYX, "PayX Wallet", InstitutionKind.PAYMENT_INSTITUTION),
]


def _account(institution: str, number: str, holder: str) -> account_pb2.AccountRef:
    return account_pb2.AccountRef(
        institution_code=institution, account_number=number, holder_name=holder
    )


VICTIM = _account(BANK_A, "6222010000000001", "Zhang San")
VICTIM_2 = _account(PAYX, "PX88000007", "Sun Ba")
MULE = _account(BANK_B, "6222020000000002", "Li Si")
WALLET = _account(PAYX, "PX88000003", "Wang Wu")
CASHOUT = _account(BANK_A, "6222010000000088", "Zhou Qi")
OFFSHORE = _account(ABROAD, "HK00012345", "Shell Trading Ltd")
# A second mule account, new at Bank B: its own monitoring hands it to the centre as a lead.
MULE_2 = _account(BANK_B, "6222020000000019", "Qian Jiu")
FREEZE_CASE = "JX-2026-0312"
SPEED = 120.0
PAYX_DELAY = timedelta(minutes=12)
AUTHORITY = "Public Security Bureau, Xicheng District"
PUBLIC_NOTICE = timedelta(days=30)
# How long (wall time) the demo waits for a step before it gives up and says what it waited
# for. A step takes well under a second on an idle machine; those that wait on PayX's late
# answer (6 s) or a 30-day jump get `patience` 3.
WAIT = 20.0


class DemoClock:
    """Case time for the demo: it runs `speed` times faster than the wall clock, so the
    minutes a slow bank takes pass in seconds, and `offset` moves it on (the 30 days of a
    public notice)."""

    def __init__(self, speed: float) -> None:
        self.base = SystemClock()
        # (origin, speed, offset) in one tuple: other threads (the hub's sweep, its gate) read
        # it at any moment, and must never see one part changed without the others.
        self._state = (self.base.now(), speed, timedelta(0))

    @property
    def speed(self) -> float:
        return self._state[1]

    @property
    def offset(self) -> timedelta:
        return self._state[2]

    @offset.setter
    def offset(self, value: timedelta) -> None:
        origin, speed, _old = self._state
        self._state = (origin, speed, value)

    def now(self) -> datetime:
        origin, speed, offset = self._state
        return origin + (self.base.now() - origin) * speed + offset

    def rebase(self, speed: float) -> None:
        """From now on case time runs `speed` times the wall clock, going on from where it is
        (`stophub demo --console` slows it to real time for people clicking through)."""
        wall = self.base.now()
        origin, old, offset = self._state
        at = origin + (wall - origin) * old + offset
        self._state = (wall, speed, at - wall)


@dataclass
class DemoNetwork:
    """What the demo has running once its story is told, for `stophub demo --console` to
    keep: the hub, its address and keys, the network's CA folder, case time, the agents."""

    directory: Path
    target: str
    keys: dict[str, PrivateKey]
    tls_dir: Path
    clock: DemoClock
    server: HubServer
    store: SqlStore
    agents: list[BankAgent]
    tasks: list[asyncio.Task[None]]
    case_ids: list[str]


class Backdated:
    """The payment network's clock: case time, less `back` while the demo replays the
    transfers made before the report. The hub's clock is never set back for them: its sweep
    and its gate read that clock from other threads, at any moment."""

    def __init__(self, clock: DemoClock) -> None:
        self.clock = clock
        self.back = timedelta(0)

    def now(self) -> datetime:
        return self.clock.now() - self.back


class Stalled(Exception):
    """A step of the demo that did not come about: what it waited for, and how long."""

    def __init__(self, condition: str, waited: float, why: str = "") -> None:
        self.condition = condition
        self.waited = waited
        self.why = why
        super().__init__(f"waited {waited:.1f} s for {condition}" + (f": {why}" if why else ""))


@dataclass
class Inbox:
    """One institution's delivery stream, read in the background, acknowledged on receipt."""

    owner: str
    stream: DeliveryStream
    received: list[Delivery] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Why the stream ended, once it has: nothing more will come, so nobody waits for it.
    ended: str | None = None

    async def pump(self) -> None:
        try:
            async for delivery in self.stream:
                await self.stream.ack(delivery.sequence)
                async with self.changed:
                    self.received.append(delivery)
                    self.changed.notify_all()
            why = "was closed"
        except (HubError, HubSignatureError) as err:
            why = f"ended: {err}"
        async with self.changed:
            self.ended = why
            self.changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[delivery_pb2.Notice], bool], what: str, patience: float = 1.0
    ) -> delivery_pb2.Notice:
        """The first notice that satisfies `predicate` (`what` says it in words), or Stalled
        after `patience` × WAIT seconds."""
        timeout = patience * WAIT
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def find() -> delivery_pb2.Notice:
            async with self.changed:
                while True:
                    for d in self.received:
                        if predicate(d.notice):
                            return d.notice
                    if self.ended is not None:
                        why = f"{self.owner}'s delivery stream {self.ended}"
                        raise Stalled(what, loop.time() - start, why)
                    await self.changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise Stalled(what, loop.time() - start) from None


def answered(order_id: str) -> Callable[[delivery_pb2.Notice], bool]:
    return lambda n: (
        n.kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED and n.order.order_id == order_id
    )


def closed(case_id: str) -> Callable[[delivery_pb2.Notice], bool]:
    return lambda n: n.kind == delivery_pb2.NOTICE_KIND_CASE_CLOSED and n.case_id == case_id


def fresh_directory(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "keys").mkdir(parents=True)


VICTIM_ID_NUMBER = "110101199001011234"
VICTIM_PHONE = "13800000000"


# The mule's resident ID number (made up): he sold his account, so he is listed as a person too.
MULE_ID_NUMBER = "11010519900307211X"


@dataclass(frozen=True)
class Listings:
    mule: blacklist_pb2.ListEntryRecord
    mule_person: blacklist_pb2.ListEntryRecord
    cashout: blacklist_pb2.ListEntryRecord


async def publish_listings(centre: HubClient, case_id: str) -> Listings:
    trader = blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER

    def acct(a: account_pb2.AccountRef) -> tuple[str, str, str]:
        return (a.institution_code, a.account_number, a.holder_name)

    mule = await centre.publish_list_entry(
        account=acct(MULE),
        basis=trader,
        reason="received and passed on fraud proceeds",
        source_case_id=case_id,
    )
    person = await centre.publish_list_entry(
        person=(MULE_ID_NUMBER, MULE.holder_name),
        basis=trader,
        reason="sold his bank account to a fraud ring",
        source_case_id=case_id,
    )
    cashout = await centre.publish_list_entry(
        account=acct(CASHOUT),
        basis=trader,
        reason="cash-out account for fraud proceeds",
        source_case_id=case_id,
    )
    return Listings(mule, person, cashout)


async def run_appeals(
    centre: HubClient, bank_a: HubClient, bank_b: HubClient, listings: Listings
) -> list[appeal_pb2.Appeal]:
    statement = ("holder statement.pdf", b"\x5a" * 32)
    mule_appeal = await bank_b.file_appeal(
        listings.mule.entry.entry_id, "the holder says he lent the card to a friend", [statement]
    )
    rejected = await centre.decide_appeal(
        mule_appeal.appeal_id,
        False,
        "the account received and passed on two victims' money within minutes",
    )
    cashout_appeal = await bank_a.file_appeal(
        listings.cashout.entry.entry_id,
        "the holder answered a fake job advert and was used; he reported it himself",
        [statement],
    )
    upheld = await centre.decide_appeal(
        cashout_appeal.appeal_id, True, "the holder was deceived and has cooperated"
    )
    return [rejected, upheld]


# A third customer of Bank A, on the phone with the same ring, about to pay the mule.
WARNED = _account(BANK_A, "6222010000000123", "Feng Yi")


async def run_warning(centre: HubClient, bank_a: HubClient) -> warning_pb2.Warning:
    """预警劝阻: the centre warns Bank A of a customer about to pay the listed mule; Bank A's
    duty desk acknowledges within the red contact window, calls, and the customer keeps the
    money."""
    warning = await centre.send_warning(
        (WARNED.institution_code, WARNED.account_number, WARNED.holder_name),
        2_000_000,
        grade=grade_pb2.GRADE_RED,
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        counterparty=(MULE.institution_code, MULE.account_number, MULE.holder_name),
        text="the same 'police officer' is on the phone with her now, asking for a transfer",
    )
    await bank_a.acknowledge_warning(warning.warning_id, "duty desk calling the customer")
    return await bank_a.report_warning_outcome(
        warning.warning_id,
        warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
        loss_prevented_fen=2_000_000,
        text="reached by phone before the transfer; she hung up on the caller",
    )


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def victim_report(
    victim: account_pb2.AccountRef, payments: list[tuple[datetime, int, str]], now: datetime
) -> case_pb2.Report:
    report = case_pb2.Report(
        victim=case_pb2.Victim(
            name=victim.holder_name,
            id_number=VICTIM_ID_NUMBER if victim is VICTIM else "110101198505054321",
            phone=VICTIM_PHONE if victim is VICTIM else "13900000000",
        ),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="a caller posing as police had the victim move savings to a 'safe account'",
    )
    report.victim_report_time.FromDatetime(now)
    for at, amount, ref in payments:
        tx = report.transactions.add(
            amount_fen=amount,
            payer=victim,
            payee=MULE,
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference=ref,
        )
        tx.transaction_time.FromDatetime(at)
    return report


async def freeze_holding_stops(centre: HubClient, inbox: Inbox, case_id: str) -> None:
    """The centre turns every stop that holds money into a freeze under the filed case."""
    case = await centre.get_case(case_id)
    freezes = []
    for stop in case.orders:
        if stop.kind != order_pb2.ORDER_KIND_STOP or stop.state != order_pb2.ORDER_STATE_HOLDING:
            continue
        instruction = order_pb2.OrderInstruction(case_id=case_id, note="criminal case filed")
        instruction.freeze.account.CopyFrom(stop.instruction.stop.account)
        instruction.freeze.amount_fen = stop.held_fen
        instruction.freeze.filed_case_number = FREEZE_CASE
        instruction.freeze.approving_authority = AUTHORITY
        instruction.freeze.term_months = 6
        instruction.freeze.stop_order_id = stop.order_id
        freezes.append(await centre.issue_order(instruction))
    for f in freezes:
        bank = f.instruction.freeze.account.institution_code
        await inbox.wait_for(answered(f.order_id), f"{bank} to answer freeze {f.order_id}")


def demo_policy(directory: Path, today: date) -> Path:
    """The shipped policy, plus a declared stand-in for each year the demo's case time reaches
    (this one and the next) that has no official holiday calendar yet: Monday to Friday with
    only New Year's Day off (the one holiday the law fixes to a date). The demo's deadlines
    then come from a calendar it states, and it prints no warning that is part of its plan; a
    real hub warns until the State Council's notice is in its policy file (README "Holidays")."""
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    shipped = load_calendar(DEFAULT_POLICY)
    for year in missing_years(shipped, today):
        text += (
            f"\n[calendar.{year}]\n"
            f'notice = "stophub demo: a stand-in for {year}, Monday to Friday with New Year'
            "'s Day off; not the State Council's notice\"\n"
            f'days_off = ["{year}-01-01"]\nworking_days = []\n'
        )
    path = directory / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path
