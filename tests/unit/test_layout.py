"""The layout rules of ADR 19, held by the code itself: where a thing lives is checked, not
remembered.

- `hub/` holds packages, `bootstrap.py` (all wiring) and nothing else;
- each proto service's handlers are in `hub/service/commands/<proto file>.py`, and that
  module holds no other service's;
- no import cycle between hub modules (whether the import is at the top, inside a function
  or under TYPE_CHECKING), but the one rule the domain states twice: a case's orders bound
  its trail's branches, and the trail is built from cases;
- no `hub` module imported inside a function, but for that one;
- nothing outside `hub/service` uses a private name of it;
- only `hub/store` touches a database session;
- a module under `hub/service`, `hub/api`, `hub/cli` or `hub/render` over 600 lines says why in its
  docstring.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

import stophub.v1  # noqa: F401  (registers the proto files in the default pool)
from hub.service.pipeline import Command

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "hub"
PROTO = ROOT / "proto" / "stophub" / "v1"
# The trail of a case is built from the case, and a stop's amount is bounded by what of the
# loss can have reached its branch of the trail: one rule, seen from both sides.
LONG = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in HUB.rglob("*.py") if "__pycache__" not in p.parts}


def imports(path: Path, known: set[str]) -> Iterator[tuple[str, bool]]:
    """Every hub module `path` imports, and whether the import is inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST, deferred: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in known:
                        yield alias.name, inner
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    if target in known:
                        yield target, inner
                    elif base in known:
                        yield base, inner
            yield from walk(child, inner)

    yield from walk(tree, False)


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {m: set() for m in found}
    deferred: list[tuple[str, str]] = []
    for name, path in found.items():
        for target, inner in imports(path, known):
            # A package's own __init__ runs before its modules: not an edge of the module.
            if target == name or name.startswith(target + "."):
                continue
            edges[name].add(target)
            if inner:
                deferred.append((name, target))
    return edges, deferred


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                on.discard(w)
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(part)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_hub_holds_packages_and_the_composition_root_only() -> None:
    loose = sorted(
        p.name for p in HUB.glob("*.py") if p.name not in ("__init__.py", "bootstrap.py")
    )
    assert loose == [], f"give these a package (docs/adr/0019): {loose}"


def test_no_import_cycle_between_hub_modules() -> None:
    # The last one, the case and its trail, went with ADR 19's amendment: the trail's
    # branch_allowance is handed to Case.issue by its caller.
    edges, _ = graph()
    assert cycles(edges) == []


def test_no_hub_module_is_imported_inside_a_function() -> None:
    _, deferred = graph()
    assert deferred == []


def test_the_cycle_checker_sees_a_cycle() -> None:
    """The check above would pass vacuously if the graph lost its edges."""
    edges, _ = graph()
    assert "hub.service.pipeline" in edges["hub.service.commands.case"]
    assert "hub.domain.cases" in edges["hub.domain.trail"]
    assert cycles({**edges, "hub.domain.cases": {"hub.domain.trail"}}) == [
        {"hub.domain.cases", "hub.domain.trail"}
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [{"a", "b", "c"}]


def services() -> dict[str, list[tuple[str, list[str]]]]:
    """Per proto file stem: its services and their methods."""
    pool = descriptor_pool.Default()
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for proto in sorted(PROTO.glob("*.proto")):
        # A file no hub module the test imports has loaded yet is registered by its own.
        importlib.import_module(f"stophub.v1.{proto.stem}_pb2")
        fd = pool.FindFileByName(f"stophub/v1/{proto.name}")
        for service in fd.services_by_name.values():
            out.setdefault(proto.stem, []).append((service.name, [m.name for m in service.methods]))
    return out


def commands_of(module: str) -> dict[str, Command[object]]:
    found = vars(importlib.import_module(module)).values()
    return {c.name: c for c in found if isinstance(c, Command)}


@pytest.mark.parametrize("stem", sorted(services()))
def test_each_proto_service_has_its_handlers_in_the_module_named_after_its_file(
    stem: str,
) -> None:
    module = f"hub.service.commands.{stem}"
    assert (HUB / "service" / "commands" / f"{stem}.py").is_file(), module
    commands = commands_of(module)
    methods = {m for _, ms in services()[stem] for m in ms}
    assert methods <= set(commands), f"{module} lacks {sorted(methods - set(commands))}"
    assert set(commands) <= methods, f"{module} serves {sorted(set(commands) - methods)} too"


def test_there_are_no_handler_modules_without_a_proto_file() -> None:
    stems = set(services())
    found = {p.stem for p in (HUB / "service" / "commands").glob("*.py")} - {"__init__"}
    assert found == stems


def python_files_outside(*folders: Path) -> Iterator[Path]:
    for top in (HUB, ROOT / "adapters", ROOT / "tests", ROOT / "bench", ROOT / "tools"):
        for path in top.rglob("*.py"):
            if "generated" in path.parts or "__pycache__" in path.parts:
                continue
            if not any(path.is_relative_to(f) for f in folders):
                yield path


def private_uses(path: Path, package: str) -> Iterator[str]:
    """Private names of `package`'s modules that `path` imports or reads off a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield f"{node.module}.{alias.name}"
                elif f"{node.module}.{alias.name}" in modules():
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package):
                    aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            yield f"{node.value.id}.{node.attr}"


def test_nothing_outside_hub_service_uses_its_private_names() -> None:
    found = {
        str(p.relative_to(ROOT)): sorted(set(private_uses(p, "hub.service")))
        for p in python_files_outside(HUB / "service")
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_private_name_check_sees_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from hub.service.pipeline import _run\nfrom hub.service import gate\ngate._span(1)\n"
    )
    assert sorted(private_uses(probe, "hub.service")) == [
        "gate._span",
        "hub.service.pipeline._run",
    ]


def session_uses(path: Path) -> list[int]:
    """Lines where `path` reads a session, names one, or imports SQLAlchemy's ORM."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            (isinstance(node, ast.Attribute) and node.attr == "session")
            or (isinstance(node, ast.Constant) and node.value == "session")
            or (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("sqlalchemy.orm")
            )
        ):
            found.append(node.lineno)
    return sorted(found)


def test_only_the_store_touches_a_database_session() -> None:
    # The console keeps its own small database (people, proposals, its journal: ADR 20) and
    # never the hub's: it reads the hub over gRPC.
    found = {
        str(p.relative_to(ROOT)): lines
        for p in python_files_outside(
            HUB / "store", ROOT / "tests", ROOT / "bench", ROOT / "tools", ROOT / "adapters/console"
        )
        if (lines := session_uses(p))
    }
    assert found == {}


def test_the_session_check_sees_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('x = uow.session\ny = getattr(uow, "session")\nfrom sqlalchemy.orm import S\n')
    assert session_uses(probe) == [1, 2, 3]


@pytest.mark.parametrize("folder", ["service", "api", "cli", "render"])
def test_a_long_module_says_why(folder: str) -> None:
    long = []
    for path in sorted((HUB / folder).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG:
            doc = " ".join((ast.get_docstring(ast.parse(text)) or "").lower().split())
            if f"over {LONG}" not in doc:
                long.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert long == [], f"split these, or say in the docstring why it is over {LONG} lines"
