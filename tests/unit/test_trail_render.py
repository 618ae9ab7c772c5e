"""The money trail as people see it: the terminal tree and the SVG, from hand-built Trails."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from hub.domain.wording import MASKED, Disclosure, mask_name
from hub.render.trail import trail_svg, trail_tree
from hub.render.wording import display_zone, set_display_zone
from stophub.v1 import account_pb2, order_pb2, trail_pb2

S = trail_pb2.TrailNodeStatus
SVG = "{http://www.w3.org/2000/svg}"

CASE = "C-2024-0001"
VICTIM = "BANKA/6222000011112222"
MULE = "BANKB/6228480012345678"
WALLET = "PAYX/W88001234567890"
OFFSHORE = "OFFSHORE/GB29NWBK60161331926819"
DEEP = "BANKA/6222999988887777"
ALL_ACCOUNTS = [VICTIM, MULE, WALLET, OFFSHORE, DEEP]

WALLET_HOLDER = 'Li <&> "Wu"'
HOLDERS = ("Zhang San", "Wang Wu", WALLET_HOLDER, "Shell Ltd", "Zhao Liu")
FULL = Disclosure(personal_data=True)


def _ts(minute: int) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime(2024, 3, 1, 10, minute, tzinfo=UTC))
    return ts


def _node(
    node_id: str,
    holder: str,
    layer: int,
    status: trail_pb2.TrailNodeStatus.ValueType,
    *,
    received: int = 0,
    held: int = 0,
    order_id: str = "",
    order_state: order_pb2.OrderState.ValueType = order_pb2.ORDER_STATE_UNSPECIFIED,
    note: str = "",
    breached: bool = False,
) -> trail_pb2.TrailNode:
    institution, _, account = node_id.partition("/")
    return trail_pb2.TrailNode(
        node_id=node_id,
        account=account_pb2.AccountRef(
            institution_code=institution, account_number=account, holder_name=holder
        ),
        layer=layer,
        received_fen=received,
        held_fen=held,
        status=status,
        order_id=order_id,
        order_state=order_state,
        note=note,
        breached=breached,
    )


def _edge(
    src: str, dst: str, minute: int, amount: int, carried: int | None = None, cycle: bool = False
) -> trail_pb2.TrailEdge:
    return trail_pb2.TrailEdge(
        from_node_id=src,
        to_node_id=dst,
        transfer_time=_ts(minute),
        amount_fen=amount,
        carried_fen=amount if carried is None else carried,
        transaction_reference=f"TX{minute:04d}",
        cycle=cycle,
    )


def three_layers() -> trail_pb2.Trail:
    """victim → mule (BANKB, holding, shared by two cases) → wallet (PAYX, breached) → deep
    (BANKA, awaiting the centre) → back to the mule (cycle); mule → OFFSHORE (beyond reach)."""
    mule = _node(
        MULE,
        "Wang Wu",
        1,
        S.TRAIL_NODE_STATUS_ORDERED,
        received=5_000_000,
        held=3_000_000,
        order_id="O-STOP-1",
        order_state=order_pb2.ORDER_STATE_HOLDING,
    )
    mule.attributions.add(case_id=CASE, claim_fen=5_000_000, attributed_fen=1_875_000)
    mule.attributions.add(case_id="C-2024-0077", claim_fen=3_000_000, attributed_fen=1_125_000)
    mule.pooled_held_fen = 3_000_000
    return trail_pb2.Trail(
        case_id=CASE,
        loss_fen=5_000_000,
        held_fen=3_800_000,
        max_layer=2,
        read_time=_ts(59),
        nodes=[
            _node(VICTIM, "Zhang San", 0, S.TRAIL_NODE_STATUS_VICTIM),
            mule,
            _node(
                WALLET,
                WALLET_HOLDER,
                2,
                S.TRAIL_NODE_STATUS_ORDERED,
                received=1_500_000,
                held=800_000,
                order_id="O-STOP-2",
                order_state=order_pb2.ORDER_STATE_HOLDING,
                breached=True,
            ),
            _node(OFFSHORE, "Shell Ltd", 2, S.TRAIL_NODE_STATUS_BEYOND_REACH, received=500_000),
            _node(
                DEEP,
                "Zhao Liu",
                3,
                S.TRAIL_NODE_STATUS_AWAITING_CENTRE,
                received=700_000,
                note="deeper than the rule reaches",
            ),
        ],
        edges=[
            _edge(VICTIM, MULE, 0, 5_000_000),
            # Listed out of time order: children must follow transfer time, not list order.
            _edge(MULE, OFFSHORE, 20, 500_000),
            _edge(MULE, WALLET, 10, 2_000_000, carried=1_500_000),
            _edge(WALLET, DEEP, 30, 700_000),
            _edge(DEEP, MULE, 40, 200_000, cycle=True),
        ],
    )


def render_text(trail: trail_pb2.Trail, shown: Disclosure = MASKED) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(trail_tree(trail, shown))
    return console.export_text()


def line_with(text: str, needle: str) -> str:
    (line,) = [ln for ln in text.splitlines() if needle in ln]
    return line


def node_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("data-node") is not None]


def group_text(group: ET.Element) -> list[str]:
    return [t.text or "" for t in group.iter(f"{SVG}text")]


# ---- terminal tree -----------------------------------------------------------------------------


def test_tree_masks_every_account_and_never_shows_a_full_number() -> None:
    text = render_text(three_layers())
    for node_id in ALL_ACCOUNTS:
        account = node_id.split("/")[1]
        assert account not in text
        assert "*" * (len(account) - 4) + account[-4:] in text


def test_tree_root_is_the_victim_with_case_and_loss() -> None:
    first = render_text(three_layers()).splitlines()[0]
    assert CASE in first
    assert "loss ¥50,000.00" in first
    assert "************2222" in first  # the victim's own account


def test_tree_shows_each_node_with_its_transfer_amounts_and_order() -> None:
    text = render_text(three_layers(), FULL)
    mule = line_with(text, "Wang Wu")
    assert "L1 BANKB 6228480012345678" in mule, "with personal data, in full"
    assert "03-01 10:00 ¥50,000.00" in mule
    assert "received ¥50,000.00" in mule
    assert "held ¥30,000.00" in mule
    assert "order O-STOP-1 holding" in mule

    wallet = line_with(text, "PAYX")
    assert "L2 PAYX W88001234567890" in wallet
    assert "03-01 10:10 ¥20,000.00, carried ¥15,000.00" in wallet
    assert WALLET_HOLDER in wallet
    assert "BREACH" in wallet
    # A transfer that carried all of it says nothing about carrying.
    assert "carried" not in mule


def test_tree_statuses() -> None:
    text = render_text(three_layers())
    assert "BEYOND REACH" in line_with(text, "OFFSHORE")
    deep = line_with(text, "BANKA ************7777")
    assert "AWAITING CENTRE: deeper than the rule reaches" in deep
    assert "BREACH" not in deep


def test_tree_children_follow_transfer_time_not_list_order() -> None:
    text = render_text(three_layers())
    assert text.index("PAYX ****") < text.index("OFFSHORE")


def test_tree_cycle_is_drawn_but_not_followed() -> None:
    text = render_text(three_layers())
    cycle = line_with(text, "cycle")
    assert "↺ back to L1 BANKB ************5678" in cycle
    assert "not followed" in cycle
    # The mule appears in full once (its own line) and once in the cycle leaf, no more.
    assert text.count("BANKB ************5678") == 2
    assert text.count("order O-STOP-1") == 1


def test_tree_breach_is_bold_red() -> None:
    tree = trail_tree(three_layers())
    console = Console(record=True, width=160, force_terminal=True, color_system="truecolor")
    console.print(tree)
    styled = console.export_text(styles=True)
    assert "\x1b[1;31mBREACH" in styled


def test_tree_shows_attributions() -> None:
    text = render_text(three_layers())
    shared = line_with(text, "shared with")
    assert f"{CASE}: attributed ¥18,750.00" in shared
    assert "C-2024-0077: attributed ¥11,250.00" in shared
    assert "¥30,000.00 pooled" in shared


def test_tree_node_with_two_parents_is_drawn_once_then_referenced() -> None:
    trail = three_layers()
    # A second, later way into the deep account, straight from the mule.
    trail.edges.append(_edge(MULE, DEEP, 50, 100_000))
    text = render_text(trail)
    assert text.count("AWAITING CENTRE") == 1
    assert "see L3 BANKA ************7777 above" in text
    assert "03-01 10:50 ¥1,000.00" in line_with(text, "above")


def test_tree_survives_a_loop_not_flagged_as_cycle() -> None:
    trail = three_layers()
    for edge in trail.edges:
        edge.cycle = False
    text = render_text(trail)
    assert "↺ back to L1 BANKB" in text
    assert text.count("order O-STOP-1") == 1


def test_tree_attaches_unreached_accounts_under_the_victim() -> None:
    trail = three_layers()
    trail.nodes.append(_node("BANKC/6210111122223333", "Qian Qi", 2, S.TRAIL_NODE_STATUS_EXHAUSTED))
    trail.edges.append(_edge(MULE, "BANKZ/999900001111", 55, 10_000))
    text = render_text(trail)
    orphan = line_with(text, "BANKC")
    assert "no transfer to it" in orphan
    assert "exhausted" in orphan
    assert "6210111122223333" not in text
    missing = line_with(text, "BANKZ")
    assert "not on the trail" in missing
    assert "999900001111" not in missing


def test_order_state_unknown_to_this_build_still_renders() -> None:
    trail = three_layers()
    trail.nodes[1].order_state = 99  # type: ignore[assignment]
    assert "order O-STOP-1 state 99" in render_text(trail)
    assert "order O-STOP-1 · state 99" in trail_svg(trail)


def test_tree_does_not_pass_on_terminal_control_codes() -> None:
    trail = three_layers()
    trail.nodes[1].account.holder_name = "Evil\x1b[2J\x1b]0;pwned\x07Name"
    console = Console(record=True, width=160, force_terminal=True)
    console.print(trail_tree(trail))
    assert "\x1b]0;" not in console.export_text(styles=True)
    assert "\x1b[2J" not in console.export_text(styles=True)


def test_tree_of_a_victim_only_trail() -> None:
    trail = trail_pb2.Trail(
        case_id=CASE,
        loss_fen=100,
        nodes=[_node(VICTIM, "Zhang San", 0, S.TRAIL_NODE_STATUS_VICTIM)],
    )
    text = render_text(trail)
    assert CASE in text
    assert "loss ¥1.00" in text
    assert len(text.strip().splitlines()) == 1


def test_tree_of_a_trail_without_any_node() -> None:
    assert CASE in render_text(trail_pb2.Trail(case_id=CASE))


# ---- SVG ---------------------------------------------------------------------------------------


def test_svg_parses_with_one_group_per_node() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    assert root.tag == f"{SVG}svg"
    groups = node_groups(root)
    assert sorted(g.get("data-node", "") for g in groups) == ["0", "1", "2", "3", "4"]


def test_svg_columns_are_layers() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    xs: dict[str, set[float]] = {}
    for g in node_groups(root):
        xs.setdefault(g.get("data-layer", ""), set()).add(translate(g)[0])
    assert all(len(v) == 1 for v in xs.values())
    assert min(xs["0"]) < min(xs["1"]) < min(xs["2"]) < min(xs["3"])


def test_svg_never_shows_a_full_account_number() -> None:
    svg = trail_svg(three_layers())
    for node_id in ALL_ACCOUNTS:
        account = node_id.split("/")[1]
        assert account not in svg
        assert account[-4:] in svg


def test_svg_cycle_edge_is_dashed_and_coloured_apart() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    edges = [g for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "").split()]
    cycles = [g for g in edges if "cycle" in (g.get("class") or "").split()]
    assert len(cycles) == 1
    assert (cycles[0].get("data-from"), cycles[0].get("data-to")) == ("4", "1")
    (path,) = cycles[0].iter(f"{SVG}path")
    assert path.get("stroke-dasharray")
    assert path.get("marker-end") == "url(#trail-arrow-cycle)"
    normal = [p for g in edges if g not in cycles for p in g.iter(f"{SVG}path")]
    assert len(normal) == 4
    assert all(not p.get("stroke-dasharray") for p in normal)
    assert {p.get("stroke") for p in normal}.isdisjoint({path.get("stroke")})
    ids = {m.get("id") for m in root.iter(f"{SVG}marker")}
    assert {"trail-arrow", "trail-arrow-cycle"} <= ids


def test_svg_edge_labels_amount_time_and_carried() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    labels = {
        (g.get("data-from"), g.get("data-to")): group_text(g)
        for g in root.iter(f"{SVG}g")
        if "edge" in (g.get("class") or "").split()
    }
    assert labels[("0", "1")] == ["03-01 10:00 ¥50,000.00"]
    assert labels[("1", "2")] == ["03-01 10:10 ¥20,000.00", "carried ¥15,000.00"]


def test_svg_breached_node_has_red_thick_border_and_label() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    by_index = {g.get("data-node"): g for g in node_groups(root)}
    wallet = by_index["2"]
    assert "breached" in (wallet.get("class") or "").split()
    box = wallet.find(f"{SVG}rect")
    assert box is not None
    assert box.get("stroke") == "#d32f2f"
    assert float(box.get("stroke-width", "0")) >= 3
    assert "BREACH" in group_text(wallet)
    for other in ("0", "1", "3", "4"):
        assert "BREACH" not in group_text(by_index[other])


def test_svg_status_styles() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    by_index = {g.get("data-node"): g for g in node_groups(root)}
    offshore_box = by_index["3"].find(f"{SVG}rect")
    assert offshore_box is not None and offshore_box.get("stroke-dasharray")
    assert "BEYOND REACH" in group_text(by_index["3"])
    assert "awaiting-centre" in (by_index["4"].get("class") or "")
    assert any(t.startswith("AWAITING CENTRE") for t in group_text(by_index["4"]))


def test_svg_held_amounts_stand_out() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    by_index = {g.get("data-node"): g for g in node_groups(root)}
    assert "held ¥30,000.00" in group_text(by_index["1"])
    assert "held ¥8,000.00" in group_text(by_index["2"])
    bands = [r for r in by_index["1"].iter(f"{SVG}rect") if r.get("class") == "held-band"]
    assert len(bands) == 1
    # Nothing held: no band.
    assert not [r for r in by_index["3"].iter(f"{SVG}rect") if r.get("class") == "held-band"]


def test_svg_title_has_case_loss_and_held() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert CASE in texts
    assert "loss ¥50,000.00" in texts
    assert "held ¥38,000.00" in texts


def test_svg_escapes_hostile_holder_names() -> None:
    svg = trail_svg(three_layers(), FULL)
    assert WALLET_HOLDER not in svg  # raw, it would break the document
    root = ET.fromstring(svg)
    by_index = {g.get("data-node"): g for g in node_groups(root)}
    assert WALLET_HOLDER in group_text(by_index["2"])


def test_svg_survives_control_characters_and_markup_in_every_text_field() -> None:
    trail = three_layers()
    trail.case_id = "C<1>&\x00"
    trail.nodes[4].note = "</text><script>alert(1)</script>\x1b"
    trail.nodes[1].attributions[1].case_id = "C&2'"
    svg = trail_svg(trail)
    root = ET.fromstring(svg)
    assert "<script" not in svg
    assert not list(root.iter(f"{SVG}script"))


def test_svg_is_self_contained() -> None:
    svg = trail_svg(three_layers())
    urls = re.findall(r"https?://[^\s\"'<>)]*", svg)
    assert urls == ["http://www.w3.org/2000/svg"]
    root = ET.fromstring(svg)
    for tag in ("image", "script", "foreignObject", "use", "a"):
        assert not list(root.iter(f"{SVG}{tag}"))
    assert "@import" not in svg
    assert "@font-face" not in svg


def translate(element: ET.Element) -> tuple[float, float]:
    match = re.fullmatch(r"translate\(([-\d.]+),([-\d.]+)\)", element.get("transform", ""))
    assert match
    return float(match.group(1)), float(match.group(2))


def test_svg_view_box_holds_every_node() -> None:
    root = ET.fromstring(trail_svg(three_layers()))
    _, _, width, height = (float(v) for v in root.get("viewBox", "").split())
    (trail_group,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "trail"]
    dx, dy = translate(trail_group)
    for group in node_groups(root):
        x, y = translate(group)
        box = group.find(f"{SVG}rect")
        assert box is not None
        assert dx + x >= 0 and dx + x + float(box.get("width", "0")) <= width
        assert dy + y >= 0 and dy + y + float(box.get("height", "0")) <= height


def test_svg_is_deterministic() -> None:
    assert trail_svg(three_layers()) == trail_svg(three_layers())


def test_svg_of_a_victim_only_trail() -> None:
    trail = trail_pb2.Trail(
        case_id=CASE,
        loss_fen=100,
        nodes=[_node(VICTIM, "Zhang San", 0, S.TRAIL_NODE_STATUS_VICTIM)],
    )
    root = ET.fromstring(trail_svg(trail))
    assert len(node_groups(root)) == 1
    assert not [g for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "").split()]


def test_svg_of_a_trail_without_any_node() -> None:
    root = ET.fromstring(trail_svg(trail_pb2.Trail(case_id=CASE)))
    assert node_groups(root) == []


def test_svg_two_parents_and_unflagged_loops_do_not_duplicate_boxes() -> None:
    trail = three_layers()
    trail.edges.append(_edge(MULE, DEEP, 50, 100_000))
    for edge in trail.edges:
        edge.cycle = False
    root = ET.fromstring(trail_svg(trail))
    assert len(node_groups(root)) == 5


# ---- people, times and size (docs/personal-data.md) -------------------------------------------


@pytest.fixture
def shanghai() -> Iterator[None]:
    before = display_zone()
    set_display_zone(ZoneInfo("Asia/Shanghai"))
    try:
        yield
    finally:
        set_display_zone(before)


def test_holders_are_masked_everywhere_unless_personal_data() -> None:
    trail = three_layers()
    trail.nodes[4].note = "Zhao Liu moved it on"
    tree, svg = render_text(trail), trail_svg(trail)
    for holder in HOLDERS:
        assert holder not in tree and holder not in svg
        assert mask_name(holder) in tree
    assert mask_name("Zhang San") in svg, "the victim too"
    assert f"AWAITING CENTRE: {mask_name('Zhao Liu')} moved it on" in tree, "a note's names"

    tree, svg = render_text(trail, FULL), trail_svg(trail, FULL)
    for holder in HOLDERS:
        assert holder in tree
    root = ET.fromstring(svg)
    texts = " ".join(t for g in node_groups(root) for t in group_text(g))
    assert all(holder in texts for holder in HOLDERS)
    for node_id in ALL_ACCOUNTS:
        assert node_id.split("/")[1] in tree and node_id.split("/")[1] in svg


@pytest.mark.usefixtures("shanghai")
def test_transfer_times_are_in_the_display_zone_which_both_views_name() -> None:
    text = render_text(three_layers())
    assert "times in Asia/Shanghai (UTC+08:00)" in text.splitlines()[0]
    assert "03-01 18:00 ¥50,000.00" in text, "10:00 UTC"

    root = ET.fromstring(trail_svg(three_layers()))
    sub = next(t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "sub")
    assert "read 2024-03-01 18:59" in sub and "times in Asia/Shanghai (UTC+08:00)" in sub
    (label,) = [group_text(g) for g in root.iter(f"{SVG}g") if g.get("data-from") == "0"]
    assert label == ["03-01 18:00 ¥50,000.00"]


def test_transfers_across_a_year_show_the_year() -> None:
    trail = three_layers()
    trail.edges[0].transfer_time.FromDatetime(datetime(2023, 12, 31, 23, 50, tzinfo=UTC))
    text = render_text(trail)
    assert "2023-12-31 23:50 ¥50,000.00" in text and "2024-03-01 10:10" in text


def test_svg_of_the_victim_and_three_layers_fits_a_1400_pixel_window() -> None:
    for shown in (MASKED, FULL):
        root = ET.fromstring(trail_svg(three_layers(), shown))
        assert max(int(g.get("data-layer", "0")) for g in node_groups(root)) == 3
        assert float(root.get("width", "0")) <= 1400
        assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"


def test_svg_shows_order_ids_and_states_whole() -> None:
    trail = three_layers()
    trail.case_id = "C20261204-1F692369"
    trail.nodes[1].order_id = "C20261204-1F692369-O004"
    trail.nodes[2].order_id = "O-FROM-ANOTHER-CASE-0000000001"
    by_index = {g.get("data-node"): g for g in node_groups(ET.fromstring(trail_svg(trail)))}
    assert "order O004 · holding" in group_text(by_index["1"]), "the id within the case"
    wallet = group_text(by_index["2"])
    assert any("O-FROM-ANOTHER-CASE-0000000001" in t for t in wallet), "an id is never split"
    assert any("holding" in t for t in wallet)
    assert not [t for t in wallet if "…" in t]
