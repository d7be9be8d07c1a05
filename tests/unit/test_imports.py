"""The package's import graph, built from the code's own imports: no cycles, and each
role sees only what it should.

Every import counts, those under ``if TYPE_CHECKING:`` and inside functions too: a
cycle that only type hints close is still two modules that cannot be read apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "danmaku"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the modules it imports (of this package, and top-level third-party
    names, e.g. ``redis``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    # ``from danmaku.store import keys`` imports the submodule keys.
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = imports()
    assert "danmaku.gateway.server" in graph and "danmaku.store.keys" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def _reaches(graph: dict[str, set[str]], name: str, prefix: str) -> list[str]:
    return sorted(d for d in graph[name] if d == prefix or d.startswith(prefix + "."))


def test_each_role_sees_only_its_own_side() -> None:
    graph = imports()
    forbidden = {
        "danmaku.gateway": ("danmaku.web", "danmaku.worker", "danmaku.store.moderation"),
        "danmaku.worker": ("danmaku.web", "danmaku.gateway", "danmaku.store.moderation"),
        "danmaku.web": ("danmaku.gateway", "danmaku.worker"),
        "danmaku.webhooks": ("danmaku.web", "danmaku.gateway", "danmaku.worker"),
        "danmaku.rules": ("danmaku.store", "danmaku.gateway", "danmaku.worker", "danmaku.web"),
    }
    wrong = {
        f"{name} -> {dep}"
        for name in graph
        for role, banned in forbidden.items()
        if name == role or name.startswith(role + ".")
        for prefix in banned
        for dep in _reaches(graph, name, prefix)
    }
    assert not wrong, sorted(wrong)


def test_only_the_store_and_dev_tools_speak_to_redis() -> None:
    graph = imports()
    speakers = {
        name for name, deps in graph.items() if any(d.split(".")[0] == "redis" for d in deps)
    }
    assert speakers and all(s.startswith(("danmaku.store", "danmaku.dev")) for s in speakers), (
        sorted(speakers)
    )


# The store's container, core and components: what gateway and worker code never names.
STORE_IMPLEMENTATION = {
    f"danmaku.store.{name}"
    for name in (
        "redis_store",
        "core",
        "intake",
        "feed",
        "frames",
        "rooms",
        "moderation",
        "review",
        "identity",
        "replay",
        "platform",
    )
}


def test_gateway_and_worker_code_names_only_its_store_interface() -> None:
    """The gateway and the worker are handed the store typed as their interfaces
    (``store/interfaces.py``), so ``make lint`` (mypy) refuses a call outside them; no
    module of theirs names the whole ``Store`` (or its implementation modules)."""
    wrong = []
    for role in ("gateway", "worker"):
        for path in sorted((PACKAGE / role).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "danmaku.store"
                ):
                    names = {a.name for a in node.names}
                    if "Store" in names or node.module in STORE_IMPLEMENTATION:
                        wrong.append(f"{module_name(path)}: from {node.module} import {names}")
    assert not wrong, wrong


def test_the_store_is_composed_not_mixed_in() -> None:
    """``Store`` is a container of components (``store.feed``, ``store.moderation``,
    ...): no class of ``danmaku/store`` inherits from another of them (no mixins, no
    base order that matters), and none declares a method it leaves to another class
    (``raise NotImplementedError``)."""
    store_pkg = PACKAGE / "store"
    classes: dict[str, ast.ClassDef] = {}
    for path in sorted(store_pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes[f"{module_name(path)}.{node.name}"] = node
    names = {key.rpartition(".")[2] for key in classes}
    assert "Store" in names and "StoreCore" in names
    mixed = [
        f"{key}({ast.unparse(base)})"
        for key, node in classes.items()
        for base in node.bases
        if ast.unparse(base).rpartition(".")[2] in names
    ]
    assert not mixed, mixed
    stubs = [
        f"{key}.{fn.name}"
        for key, node in classes.items()
        for fn in ast.walk(node)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for raised in ast.walk(fn)
        if isinstance(raised, ast.Raise)
        and raised.exc is not None
        and "NotImplementedError" in ast.unparse(raised.exc)
    ]
    assert not stubs, stubs


def test_store_components_are_attributes_each_role_is_handed_one() -> None:
    """Each role's interface is one component of ``Store``, and ``Store`` exposes the
    components as attributes (no method of its own besides ping, wait_ready, close)."""
    from danmaku.metrics import Metrics
    from danmaku.store import Store
    from danmaku.store.feed import Feed
    from danmaku.store.frames import Frames
    from danmaku.store.intake import Intake

    store = Store("redis://127.0.0.1:1/0", Metrics(process=False))  # connects lazily
    try:
        assert isinstance(store.intake, Intake)
        assert isinstance(store.feed, Feed)
        assert isinstance(store.frames, Frames)
        own = {n for n, v in vars(Store).items() if callable(v) and not n.startswith("_")}
        assert own == {"ping", "wait_ready", "close"}
    finally:
        store.close()
