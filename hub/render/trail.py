"""How a case's money trail looks to people: a terminal tree and a standalone SVG.

Both views draw the same walk of the trail (`_walk`): depth first from the victim's account,
each account's transfers in time order. The walk decides, once, which transfer shows an
account in full and which only point back at it, so the two views always agree.

People are shown as docs/personal-data.md says (a `Disclosure`): account numbers and holder
names masked unless the operator asked for personal data, everywhere, including attributes
and tooltips of the SVG: an operator may forward the file. Holder names, notes and ids come
from banks and are treated as hostile text: control characters are replaced (they could drive
the terminal) and everything that goes into the SVG is XML-escaped. Transfer times are in the
display zone, which both views name.

Kept as one module of about 730 lines, over 600 lines: the tree and the picture must draw
the same walk with the same wording, and splitting them would spread the walk's private steps
and helpers across two modules.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rich.text import Text
from rich.tree import Tree

from hub.domain.wording import MASKED, Disclosure, yuan
from hub.render.case import STATE_STYLE
from hub.render.wording import Times
from stophub.v1 import order_pb2, trail_pb2

Status = trail_pb2.TrailNodeStatus

# C0 and C1 controls (ESC among them) and the code points XML 1.0 cannot carry.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

_ORDER_STATE_STYLE = {str(state): style for state, style in STATE_STYLE.items()}


def _clean(text: str) -> str:
    return _UNSAFE.sub("\ufffd", text)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- the walk shared by both views -------------------------------------------------------------

# node: the account drawn in full; ref: an account already drawn under an earlier transfer;
# cycle: money going back up its own branch, drawn but not followed; missing: an edge naming
# an account the trail does not list.
_StepKind = Literal["node", "ref", "cycle", "missing"]


@dataclass(frozen=True)
class _Step:
    kind: _StepKind
    node_id: str
    # The transfer that leads here; None for the victim and for accounts nothing leads to.
    edge: trail_pb2.TrailEdge | None
    # Index of the step this one hangs under, in `_Walk.steps`.
    parent: int | None


@dataclass(frozen=True)
class _Walk:
    nodes: dict[str, trail_pb2.TrailNode]
    # Position of each account in `Trail.nodes` (the first, should an id repeat).
    order: dict[str, int]
    steps: list[_Step]
    # Index of the victim's step, when the trail has a victim account.
    root: int | None


def _root_id(trail: trail_pb2.Trail) -> str | None:
    for node in trail.nodes:
        if node.status == Status.TRAIL_NODE_STATUS_VICTIM:
            return node.node_id
    for node in trail.nodes:
        if node.layer == 0:
            return node.node_id
    return None


def _walk(trail: trail_pb2.Trail) -> _Walk:
    nodes: dict[str, trail_pb2.TrailNode] = {}
    order: dict[str, int] = {}
    for i, node in enumerate(trail.nodes):
        nodes.setdefault(node.node_id, node)
        order.setdefault(node.node_id, i)

    outgoing: dict[str, list[tuple[int, trail_pb2.TrailEdge]]] = {}
    for i, edge in enumerate(trail.edges):
        outgoing.setdefault(edge.from_node_id, []).append((i, edge))
    for edges in outgoing.values():
        # Time order, and the trail's own order between transfers at the same instant.
        edges.sort(key=lambda ie: (ie[1].transfer_time.seconds, ie[1].transfer_time.nanos, ie[0]))

    steps: list[_Step] = []
    branch: list[frozenset[str]] = []  # per step: the accounts from the top down to it
    expanded: set[str] = set()

    # An explicit stack rather than recursion: a long or malformed trail cannot exhaust
    # Python's stack, and `expanded` ends every loop the trail's `cycle` flags missed.
    def grow(start: str, parent: int | None) -> None:
        stack: list[tuple[str, trail_pb2.TrailEdge | None, int | None]] = [(start, None, parent)]
        while stack:
            node_id, edge, up = stack.pop()
            above = branch[up] if up is not None else frozenset()
            kind: _StepKind
            if node_id not in nodes:
                kind = "missing"
            elif (edge is not None and edge.cycle) or node_id in above:
                kind = "cycle"
            elif node_id in expanded:
                kind = "ref"
            else:
                kind = "node"
            steps.append(_Step(kind, node_id, edge, up))
            branch.append(above | {node_id})
            if kind != "node":
                continue
            expanded.add(node_id)
            here = len(steps) - 1
            for _, out in reversed(outgoing.get(node_id, [])):
                stack.append((out.to_node_id, out, here))

    root_id = _root_id(trail)
    root: int | None = None
    if root_id is not None:
        root = 0
        grow(root_id, None)
    # Accounts no transfer from the victim's side reaches still belong on the picture.
    for node_id in sorted(nodes, key=lambda n: (nodes[n].layer, order[n])):
        if node_id not in expanded:
            grow(node_id, root)
    return _Walk(nodes, order, steps, root)


# ---- shared wording ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Words:
    """How one rendering writes people and times: what it may show of people (the holders on
    the trail are masked in its free text too), and its transfer times, in the display zone."""

    shown: Disclosure
    times: Times
    case_id: str


def _words(trail: trail_pb2.Trail, shown: Disclosure) -> _Words:
    shown = shown.knowing(node.account.holder_name for node in trail.nodes)
    times = Times((_at(e) for e in trail.edges), unit="minutes", dated=True, short_dates=True)
    return _Words(shown, times, trail.case_id)


def _at(edge: trail_pb2.TrailEdge) -> datetime | None:
    return edge.transfer_time.ToDatetime(tzinfo=UTC) if edge.HasField("transfer_time") else None


def _account(node: trail_pb2.TrailNode, w: _Words) -> str:
    acct = node.account
    return _clean(f"L{node.layer} {acct.institution_code} {w.shown.account(acct.account_number)}")


def _holder(node: trail_pb2.TrailNode, w: _Words) -> str:
    return _clean(w.shown.name(node.account.holder_name))


def _missing_id(node_id: str, w: _Words) -> str:
    """An edge's node id ("INSTITUTION/ACCOUNT") for a node the trail does not list."""
    return _clean(w.shown.subject(node_id))


def _is_victim(node: trail_pb2.TrailNode) -> bool:
    """The victim's own account: the money left it, nothing is received or held there."""
    return node.status == Status.TRAIL_NODE_STATUS_VICTIM


def _order_state(node: trail_pb2.TrailNode) -> str:
    try:
        name = order_pb2.OrderState.Name(node.order_state)
    except ValueError:  # a state added to the protocol after this build
        return f"state {node.order_state}"
    return name.removeprefix("ORDER_STATE_").lower()


def _status(node: trail_pb2.TrailNode, w: _Words) -> str:
    """The status words shown for a node; empty for ordered and victim accounts."""
    match node.status:
        case Status.TRAIL_NODE_STATUS_BEYOND_REACH:
            return "BEYOND REACH"
        case Status.TRAIL_NODE_STATUS_AWAITING_CENTRE:
            note = _clean(w.shown.text(node.note))
            return f"AWAITING CENTRE: {note}" if note else "AWAITING CENTRE"
        case Status.TRAIL_NODE_STATUS_EXHAUSTED:
            return "exhausted"
        case _:
            return ""


def _order_id(node: trail_pb2.TrailNode, w: _Words) -> str:
    """The order's id within the case (O004 for C20261204-1F692369-O004): the case is named
    above it, and the short id leaves room for the order's state."""
    return _clean(node.order_id.removeprefix(f"{w.case_id}-"))


def _order(node: trail_pb2.TrailNode) -> str:
    return _clean(f"order {node.order_id} {_order_state(node)}") if node.order_id else ""


def _when(edge: trail_pb2.TrailEdge, w: _Words) -> str:
    return w.times(_at(edge)) or "--:--"


def _transfer(edge: trail_pb2.TrailEdge, w: _Words) -> str:
    text = f"{_when(edge, w)} {yuan(edge.amount_fen)}"
    if edge.carried_fen < edge.amount_fen:
        text += f", carried {yuan(edge.carried_fen)}"
    return text


def _shared(node: trail_pb2.TrailNode) -> str:
    parts = ", ".join(
        f"{_clean(a.case_id)}: attributed {yuan(a.attributed_fen)}" for a in node.attributions
    )
    return f"shared with {parts} of {yuan(node.pooled_held_fen)} pooled"


def _headline(trail: trail_pb2.Trail, w: _Words) -> str:
    return (
        f"case {_clean(trail.case_id)}  loss {yuan(trail.loss_fen)}  held {yuan(trail.held_fen)}"
        f"  times in {w.times.zone}"
    )


# ---- terminal tree -----------------------------------------------------------------------------


def _node_text(node: trail_pb2.TrailNode, w: _Words, text: Text) -> None:
    text.append(_account(node, w), style="bold")
    text.append(f" {_holder(node, w)}")
    if not _is_victim(node):
        text.append(f"  received {yuan(node.received_fen)}")
        text.append("  ")
        held_style = "bold green" if node.held_fen > 0 else "dim"
        text.append(f"held {yuan(node.held_fen)}", style=held_style)
    if node.order_id:
        text.append(f"  order {_order_id(node, w)} ")
        state = _order_state(node)
        text.append(state, style=_ORDER_STATE_STYLE.get(state, ""))
    status = _status(node, w)
    if status:
        style = {
            Status.TRAIL_NODE_STATUS_BEYOND_REACH: "magenta",
            Status.TRAIL_NODE_STATUS_AWAITING_CENTRE: "yellow",
            Status.TRAIL_NODE_STATUS_EXHAUSTED: "dim",
        }.get(node.status, "")
        text.append(f"  {status}", style=style)
    if node.breached:
        text.append("  ")
        text.append("BREACH", style="bold red")
    if node.attributions:
        text.append(f"\n{_shared(node)}", style="cyan")


def _step_label(step: _Step, walk: _Walk, w: _Words) -> Text:
    text = Text()
    if step.edge is not None:
        text.append(_transfer(step.edge, w), style="dim")
        text.append(" → ")
    node = walk.nodes.get(step.node_id)
    match step.kind:
        case "missing":
            text.append(f"{_missing_id(step.node_id, w)} (not on the trail)", style="dim")
        case "cycle":
            assert node is not None
            text.append(f"↺ back to {_account(node, w)} (cycle, not followed)", style="magenta")
        case "ref":
            assert node is not None
            text.append(f"see {_account(node, w)} above", style="dim")
        case "node":
            assert node is not None
            if step.edge is None:
                text.append("(no transfer to it on the trail) ", style="dim")
            _node_text(node, w, text)
    return text


def trail_tree(trail: trail_pb2.Trail, shown: Disclosure = MASKED) -> Tree:
    """The trail as a tree under the victim's account, for `stophub case trail CASE`."""
    walk = _walk(trail)
    w = _words(trail, shown)
    root_label = Text(_headline(trail, w), style="bold")
    if walk.root is None:
        root_label.append("  (no victim account on the trail)", style="dim")
    else:
        root_label.append("  victim ", style="dim")
        _node_text(walk.nodes[walk.steps[walk.root].node_id], w, root_label)
    tree = Tree(root_label, guide_style="dim")

    branches: list[Tree] = []
    for i, step in enumerate(walk.steps):
        if i == walk.root:
            branches.append(tree)
            continue
        parent = tree if step.parent is None else branches[step.parent]
        branches.append(parent.add(_step_label(step, walk, w)))
    return tree


# ---- SVG ---------------------------------------------------------------------------------------

# The victim and three layers fit a 1,400-pixel window at their natural size (4 boxes and 3
# gaps, 1,368 pixels): a trail is read at its own size, not shrunk to fit; deeper trails scroll.
MARGIN = 24
CHARS = 32  # what a box line holds: ids and states wrap onto the next line, never cut
BOX_W = 210  # CHARS at 10px monospace (6.02 pixels each) and the padding
COLUMN_GAP = 160  # an edge label of up to 25 characters ("12-04 16:54 ¥1,000,000.00")
COLUMN_W = BOX_W + COLUMN_GAP
LINE_H = 13.5
PAD = 8
ROW_GAP = 30
LABEL_CHAR_W = 6.1  # 10px monospace, for sizing the viewBox around edge labels
HEADER_H = 96

HELD_BAND = "#c8e6c9"
HELD_TEXT = "#1b5e20"
BREACH_RED = "#d32f2f"
CYCLE_PURPLE = "#8e24aa"
EDGE_GREY = "#546e7a"

# (stroke, fill, dash) by status.
_BOX_STYLE: dict[int, tuple[str, str, str]] = {
    Status.TRAIL_NODE_STATUS_VICTIM: ("#1565c0", "#e3f2fd", ""),
    Status.TRAIL_NODE_STATUS_ORDERED: ("#455a64", "#ffffff", ""),
    Status.TRAIL_NODE_STATUS_AWAITING_CENTRE: ("#f0a000", "#fff6e0", ""),
    Status.TRAIL_NODE_STATUS_BEYOND_REACH: ("#9e9e9e", "#f5f5f5", "6 4"),
    Status.TRAIL_NODE_STATUS_EXHAUSTED: ("#bdbdbd", "#fafafa", ""),
}

_STATUS_CLASS: dict[int, str] = {
    Status.TRAIL_NODE_STATUS_VICTIM: "victim",
    Status.TRAIL_NODE_STATUS_ORDERED: "ordered",
    Status.TRAIL_NODE_STATUS_AWAITING_CENTRE: "awaiting-centre",
    Status.TRAIL_NODE_STATUS_BEYOND_REACH: "beyond-reach",
    Status.TRAIL_NODE_STATUS_EXHAUSTED: "exhausted",
}

_STYLE = (
    "text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:10px;fill:#212121}"
    ".title{font-family:sans-serif;font-size:16px;font-weight:bold}"
    ".sub{font-family:sans-serif;font-size:12px;fill:#424242}"
    ".legend text{font-family:sans-serif;font-size:11px}"
    ".elabel{font-size:10px;fill:#37474f;paint-order:stroke;stroke:#fff;stroke-width:3px}"
    ".cycle .elabel{fill:" + CYCLE_PURPLE + "}"
)


def _x(s: str) -> str:
    return html.escape(_clean(s), quote=True)


def _n(v: float) -> str:
    return f"{v:.1f}".removesuffix(".0")


_LineKind = Literal["head", "plain", "held", "status", "shared"]


@dataclass(frozen=True)
class _Line:
    text: str
    kind: _LineKind


def _wrapped(text: str, kind: _LineKind) -> list[_Line]:
    """A line that must not be cut (an id, a state, an amount), on as many lines as it takes,
    broken between words only: an id is never split."""
    parts = textwrap.wrap(_clean(text), CHARS, break_long_words=False, break_on_hyphens=False)
    return [_Line(part, kind) for part in parts or [""]]


def _box_lines(node: trail_pb2.TrailNode, w: _Words) -> list[_Line]:
    lines = [
        *_wrapped(f"L{node.layer} · {node.account.institution_code}", "head"),
        *_wrapped(w.shown.account(node.account.account_number), "plain"),
        # The one free text of its own line; the tooltip has all of it.
        _Line(_fit(_holder(node, w), CHARS), "plain"),
    ]
    if _is_victim(node):
        lines.append(_Line("victim's account", "status"))
    else:
        lines.append(_Line(f"received {yuan(node.received_fen)}", "plain"))
        lines.append(_Line(f"held {yuan(node.held_fen)}", "held"))
    if node.order_id:
        lines += _wrapped(f"order {_order_id(node, w)} · {_order_state(node)}", "plain")
    # A centre note is the one long text worth a second line; the tooltip has all of it.
    lines.extend(
        _Line(part, "status")
        for part in textwrap.wrap(_status(node, w), CHARS, max_lines=2, placeholder=" …")
    )
    if node.attributions:
        lines.append(_Line(f"pooled {yuan(node.pooled_held_fen)}, attributed:", "shared"))
        for a in node.attributions:
            lines += _wrapped(f" {a.case_id} {yuan(a.attributed_fen)}", "shared")
    return lines


def _tooltip(node: trail_pb2.TrailNode, w: _Words) -> str:
    """Everything a box may have cut short, for the browser's hover text."""
    parts = [_account(node, w), _holder(node, w)]
    parts += [p for p in (_order(node), _status(node, w)) if p]
    if node.breached:
        parts.append("BREACH: a clock on its orders passed its deadline")
    if node.attributions:
        parts.append(_shared(node))
    return "\n".join(parts)


def _layout(walk: _Walk) -> dict[str, float]:
    """Row (in slots, top = 0) of every account drawn in full.

    A tidy tree: leaves take the next row in walk order, a parent sits at the mean of its
    children, so each subtree stays together beside its parent.
    """
    children: dict[int, list[int]] = {}
    for i, step in enumerate(walk.steps):
        if step.kind == "node" and step.parent is not None:
            children.setdefault(step.parent, []).append(i)

    row: dict[int, float] = {}
    next_leaf = 0
    for i, step in enumerate(walk.steps):
        if step.kind == "node" and i not in children:
            row[i] = next_leaf
            next_leaf += 1
    # Children come after their parent in walk order, so backwards every child is placed first.
    for i in reversed(range(len(walk.steps))):
        if i in children:
            row[i] = sum(row[c] for c in children[i]) / len(children[i])

    # Columns are layers, not depths in the walk, so two accounts of one layer can land on
    # one row (an account reached through a sibling of its layer): push the later one down.
    by_column: dict[int, list[tuple[float, int]]] = {}
    for i, r in row.items():
        layer = max(walk.nodes[walk.steps[i].node_id].layer, 0)
        by_column.setdefault(layer, []).append((r, i))
    for entries in by_column.values():
        entries.sort()
        floor = float("-inf")
        for r, i in entries:
            row[i] = max(r, floor + 1)
            floor = row[i]
    return {walk.steps[i].node_id: r for i, r in row.items()}


@dataclass(frozen=True)
class _Box:
    index: int
    x: float
    y: float


class _Bounds:
    def __init__(self) -> None:
        self.x0 = self.y0 = float("inf")
        self.x1 = self.y1 = float("-inf")

    def add(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.x0, self.y0 = min(self.x0, x0), min(self.y0, y0)
        self.x1, self.y1 = max(self.x1, x1), max(self.y1, y1)


def _svg_node(node: trail_pb2.TrailNode, w: _Words, box: _Box, box_h: float) -> Iterator[str]:
    stroke, fill, dash = _BOX_STYLE.get(node.status, ("#455a64", "#ffffff", ""))
    width = 2.0
    classes = ["node", _STATUS_CLASS.get(node.status, "unknown")]
    if node.held_fen > 0:
        classes.append("held")
    if node.breached:
        stroke, width = BREACH_RED, 4.0
        classes.append("breached")
    extra = ' opacity="0.55"' if node.status == Status.TRAIL_NODE_STATUS_EXHAUSTED else ""
    yield (
        f'<g class="{" ".join(classes)}" data-node="{box.index}" data-layer="{node.layer}"'
        f' transform="translate({_n(box.x)},{_n(box.y)})"{extra}>'
    )
    yield f"<title>{_x(_tooltip(node, w))}</title>"
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    yield (
        f'<rect class="box" width="{BOX_W}" height="{_n(box_h)}" rx="8" ry="8"'
        f' fill="{fill}" stroke="{stroke}" stroke-width="{_n(width)}"{dash_attr}/>'
    )
    if node.breached:
        yield (
            f'<text class="breach" x="{BOX_W - PAD}" y="{_n(PAD + 10)}" text-anchor="end"'
            f' font-weight="bold" fill="{BREACH_RED}">BREACH</text>'
        )
    for k, line in enumerate(_box_lines(node, w)):
        baseline = PAD + 10 + k * LINE_H
        attrs = ""
        if line.kind == "head":
            attrs = ' font-weight="bold"'
        elif line.kind == "held" and node.held_fen > 0:
            yield (
                f'<rect class="held-band" x="3" y="{_n(baseline - 10)}" width="{BOX_W - 6}"'
                f' height="{_n(LINE_H)}" fill="{HELD_BAND}"/>'
            )
            attrs = f' font-weight="bold" fill="{HELD_TEXT}"'
        elif line.kind == "held":
            attrs = ' fill="#757575"'
        elif line.kind == "status":
            colour = "#b26a00" if node.status == Status.TRAIL_NODE_STATUS_AWAITING_CENTRE else ""
            attrs = f' fill="{colour or "#616161"}" font-style="italic"'
        elif line.kind == "shared":
            attrs = ' fill="#00695c"'
        yield f'<text x="{PAD}" y="{_n(baseline)}"{attrs}>{_x(line.text)}</text>'
    yield "</g>"


def _svg_edges(
    walk: _Walk, w: _Words, boxes: dict[str, _Box], box_h: float, bounds: _Bounds
) -> Iterator[str]:
    # One arrow per pair of accounts; several transfers between them share it and stack
    # their labels instead of drawing over each other.
    groups: dict[tuple[str, str, bool], list[trail_pb2.TrailEdge]] = {}
    for step in walk.steps:
        if step.edge is None or step.kind == "missing":
            continue
        if step.edge.from_node_id not in boxes:
            continue
        key = (step.edge.from_node_id, step.node_id, step.kind == "cycle")
        groups.setdefault(key, []).append(step.edge)

    # Arrows leaving (or entering) one box get their own spots down its side, in the order of
    # the boxes at their other ends, so they neither bunch up nor cross near the box.
    forward = [key for key in groups if boxes[key[1]].x > boxes[key[0]].x]
    # ports[key, 0]: where the arrow leaves its source's side; ports[key, 1]: where it enters.
    ports: dict[tuple[tuple[str, str, bool], int], float] = {}
    for end in (0, 1):
        at: dict[str, list[tuple[str, str, bool]]] = {}
        for key in forward:
            at.setdefault(key[0] if end == 0 else key[1], []).append(key)
        for keys in at.values():
            far = [boxes[k[1] if end == 0 else k[0]] for k in keys]
            ranked = sorted(zip(((b.y, b.index) for b in far), keys, strict=True))
            for rank, (_, key) in enumerate(ranked):
                ports[key, end] = box_h * (rank + 1) / (len(keys) + 1)

    for key, edges in groups.items():
        src, dst, cycle = key
        a, b = boxes[src], boxes[dst]
        if key in forward:
            sx, sy = a.x + BOX_W, a.y + ports[key, 0]
            tx, ty = b.x, b.y + ports[key, 1]
            bend = (tx - sx) / 2
            path = (
                f"M{_n(sx)},{_n(sy)} C{_n(sx + bend)},{_n(sy)} {_n(tx - bend)},{_n(ty)}"
                f" {_n(tx)},{_n(ty)}"
            )
            # Labelled in the gap just before the target: an arrow that skips a layer passes
            # behind the boxes of the layers it skips, which would hide a label at its middle.
            mx = tx - COLUMN_GAP / 2
            my = _curve_y_at(mx, sx, sy, tx, ty)
        else:
            # Back (or sideways) to an account at the same or an earlier layer: arc over the
            # top of both boxes rather than cutting back through the columns between them.
            sx, sy = a.x + BOX_W / 2, a.y
            tx, ty = b.x + BOX_W * 0.65, b.y
            lift = 40 + 0.12 * abs(sx - tx)
            top = min(sy, ty) - lift
            path = f"M{_n(sx)},{_n(sy)} C{_n(sx)},{_n(top)} {_n(tx)},{_n(top)} {_n(tx)},{_n(ty)}"
            mx = (sx + tx) / 2
            my = (sy + ty) / 8 + 0.75 * top
            bounds.add(min(sx, tx), my - 4, max(sx, tx), my)
        colour = CYCLE_PURPLE if cycle else EDGE_GREY
        dash = ' stroke-dasharray="7 4"' if cycle else ""
        marker = "trail-arrow-cycle" if cycle else "trail-arrow"
        yield (
            f'<g class="edge{" cycle" if cycle else ""}"'
            f' data-from="{boxes[src].index}" data-to="{boxes[dst].index}">'
        )
        refs = sorted({_clean(e.transaction_reference) for e in edges if e.transaction_reference})
        if refs:
            yield f"<title>{_x('transactions ' + ', '.join(refs))}</title>"
        yield (
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}'
            f' marker-end="url(#{marker})"/>'
        )
        labels: list[str] = []
        for e in edges:
            labels.append(f"{_when(e, w)} {yuan(e.amount_fen)}")
            if e.carried_fen < e.amount_fen:
                labels.append(f"carried {yuan(e.carried_fen)}")
        if cycle:
            labels.append("cycle, not followed")
        first = my - 4 - (len(labels) - 1) * 12
        for k, label in enumerate(labels):
            y = first + k * 12
            yield (
                f'<text class="elabel" x="{_n(mx)}" y="{_n(y)}" text-anchor="middle">'
                f"{_x(label)}</text>"
            )
            half = len(label) * LABEL_CHAR_W / 2
            bounds.add(mx - half, y - 10, mx + half, y + 3)
        yield "</g>"


def _curve_y_at(x: float, sx: float, sy: float, tx: float, ty: float) -> float:
    """Height at `x` of the S-curve the forward arrows follow from (sx, sy) to (tx, ty)."""
    # Its x grows with t, so halving the interval finds the t for `x`.
    lo, hi = 0.0, 1.0
    for _ in range(40):
        t = (lo + hi) / 2
        bend = (tx - sx) / 2
        at = (1 - t) ** 3 * sx + 3 * (1 - t) ** 2 * t * (sx + bend)
        at += 3 * (1 - t) * t**2 * (tx - bend) + t**3 * tx
        lo, hi = (t, hi) if at < x else (lo, t)
    t = (lo + hi) / 2
    return (1 - t) ** 3 * sy + 3 * (1 - t) ** 2 * t * sy + 3 * (1 - t) * t**2 * ty + t**3 * ty


def _legend(y: float) -> tuple[list[str], float]:
    out = ['<g class="legend">']
    x = float(MARGIN)
    swatches = [
        (f'fill="{HELD_BAND}" stroke="{HELD_TEXT}"', "held money"),
        (f'fill="#ffffff" stroke="{BREACH_RED}" stroke-width="3"', "BREACH (deadline passed)"),
        ('fill="#fff6e0" stroke="#f0a000"', "awaiting centre"),
        ('fill="#f5f5f5" stroke="#9e9e9e" stroke-dasharray="4 3"', "beyond reach"),
        ('fill="#fafafa" stroke="#bdbdbd" opacity="0.55"', "exhausted"),
    ]
    for attrs, label in swatches:
        out.append(f'<rect x="{_n(x)}" y="{_n(y - 10)}" width="18" height="12" rx="3" {attrs}/>')
        out.append(f'<text x="{_n(x + 24)}" y="{_n(y)}">{_x(label)}</text>')
        x += 24 + len(label) * 6.5 + 18
    out.append(
        f'<path d="M{_n(x)},{_n(y - 4)} L{_n(x + 26)},{_n(y - 4)}" stroke="{CYCLE_PURPLE}"'
        ' stroke-width="1.6" stroke-dasharray="7 4" marker-end="url(#trail-arrow-cycle)"/>'
    )
    label = "cycle (money sent back up, not followed)"
    out.append(f'<text x="{_n(x + 34)}" y="{_n(y)}">{_x(label)}</text>')
    x += 34 + len(label) * 6.5
    out.append("</g>")
    return out, x


def trail_svg(trail: trail_pb2.Trail, shown: Disclosure = MASKED) -> str:
    """The trail as one self-contained SVG document: columns by layer, victim on the left."""
    walk = _walk(trail)
    w = _words(trail, shown)
    rows = _layout(walk)
    line_count = max((len(_box_lines(walk.nodes[n], w)) for n in rows), default=1)
    box_h = 2 * PAD + line_count * LINE_H
    row_h = box_h + ROW_GAP

    boxes = {
        node_id: _Box(walk.order[node_id], max(walk.nodes[node_id].layer, 0) * COLUMN_W, r * row_h)
        for node_id, r in rows.items()
    }
    bounds = _Bounds()
    for box in boxes.values():
        bounds.add(box.x, box.y, box.x + BOX_W, box.y + box_h)
    if not boxes:
        bounds.add(0, 0, BOX_W, 0)

    edges = list(_svg_edges(walk, w, boxes, box_h, bounds))
    nodes: list[str] = []
    for node_id, box in sorted(boxes.items(), key=lambda kv: kv[1].index):
        nodes.extend(_svg_node(walk.nodes[node_id], w, box, box_h))

    held_share = (
        f" ({trail.held_fen * 100 / trail.loss_fen:.0f}% of loss)" if trail.loss_fen else ""
    )
    title = f"Money trail — case {trail.case_id}"
    sub = f"loss {yuan(trail.loss_fen)} · held {yuan(trail.held_fen)}{held_share}"
    if trail.HasField("read_time"):
        read = trail.read_time.ToDatetime(tzinfo=UTC)
        sub += f" · read {Times([read], unit='minutes', dated=True)(read)}"
    sub += f" · times in {w.times.zone} · the standing rule follows to layer {trail.max_layer}"
    legend, legend_right = _legend(HEADER_H - 20)

    width = max(
        bounds.x1 - bounds.x0 + 2 * MARGIN,
        legend_right + MARGIN,
        MARGIN * 2 + len(title) * 10,
        MARGIN * 2 + len(sub) * 7,
    )
    height = HEADER_H + bounds.y1 - bounds.y0 + 2 * MARGIN
    shift_x, shift_y = MARGIN - bounds.x0, HEADER_H + MARGIN - bounds.y0

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}"'
        f' width="{_n(width)}" height="{_n(height)}">',
        f"<title>{_x(title)}</title>",
        f"<style>{_STYLE}</style>",
        "<defs>",
    ]
    for marker_id, colour in (("trail-arrow", EDGE_GREY), ("trail-arrow-cycle", CYCLE_PURPLE)):
        parts.append(
            f'<marker id="{marker_id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8"'
            f' markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
            "</marker>"
        )
    parts += [
        "</defs>",
        f'<rect width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>',
        f'<text class="title" x="{MARGIN}" y="{MARGIN + 6}">{_x(title)}</text>',
        f'<text class="sub" x="{MARGIN}" y="{MARGIN + 26}">{_x(sub)}</text>',
        *legend,
        f'<g class="trail" transform="translate({_n(shift_x)},{_n(shift_y)})">',
        *edges,  # under the boxes, so arrows never hide a box's text
        *nodes,
        "</g>",
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
