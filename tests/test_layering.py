"""The architecture, held by one test module: which package may import which, no import cycles, and
which modules are pure cores.

Every `import` in `swarmlet/` counts, wherever it is: at module level, inside a function, under
`if TYPE_CHECKING:`, relative or absolute, and `importlib.import_module("swarmlet...")` with a
literal name. An import that only a type checker follows still couples two modules, and one put
inside a function to dodge a cycle is still the cycle.

The rule, bottom to top (`TIERS`): a package may import only packages in tiers below its own.
`ALLOWED` spells out, per package, exactly which packages it may import; it is the rule, narrowed
where the design keeps two planes apart (each narrowing says why), and a test checks that it never
allows more than the rule does. A new package must be placed in both before anything can import it.

A pure module is synchronous, deterministic Python that takes events and values and returns
decisions: it never imports the modules that drive I/O, threads or the clock (`FORBIDDEN_IMPORTS`),
and never draws from the global `random` (an injected, seeded `random.Random` is how chance comes
in). `PURE_PACKAGES` and `PURE_MODULES` list them; a listed module that does not exist fails the
test, so the list cannot silently go stale.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import swarmlet

SWARMLET_DIR = Path(swarmlet.__file__).parent

# ------------------------------------------------------------------------------------ the rule

# Bottom to top. "swarmlet" is the package's own `__init__` (the version string); "__main__" is
# `python -m swarmlet`.
TIERS: tuple[frozenset[str], ...] = (
    frozenset({"swarmlet", "errors", "logs", "timers", "off_loop"}),
    frozenset({"crypto", "certs", "testing"}),
    frozenset({"wire"}),
    frozenset({"state"}),
    frozenset({"raft", "gossip", "stack"}),
    frozenset({"leader", "executor", "proxy"}),
    frozenset({"security"}),
    frozenset({"api"}),
    frozenset({"node"}),
    frozenset({"dashboard"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)

_FOUNDATION = frozenset({"swarmlet", "errors", "logs", "timers", "off_loop"})
_DATA = _FOUNDATION | {"crypto", "certs", "wire", "state"}
_PLANES = _DATA | {"raft", "gossip", "stack"}
_ROLES = _PLANES | {"leader", "executor", "proxy"}

# package -> the packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "swarmlet": frozenset(),
    "errors": frozenset(),
    "logs": frozenset(),
    # Shared wake-ups: the beat periodic loops wait for.
    "timers": frozenset(),
    # Long computations in a thread, the GIL handed back to the loop quickly.
    "off_loop": frozenset(),
    "crypto": frozenset({"errors", "logs"}),
    # Node certificates: X.509 and TLS contexts, beside crypto's primitives (not on them).
    "certs": frozenset({"errors", "logs"}),
    # Test helpers shipped with the package (image builds for the integration tests): they must
    # not pull the product in, so a test that uses them imports only what it means to test.
    "testing": frozenset({"errors"}),
    # The transport authenticates and encrypts its streams with crypto's primitives, which is why
    # crypto sits below wire (and the join protocol, which uses the transport, sits above it).
    "wire": _FOUNDATION | {"crypto", "certs"},
    # Not crypto: the replicated state stores tokens and secrets sealed and compares ciphertext;
    # opening them is for security/, on the managers, never for the state machine.
    "state": _FOUNDATION | {"wire"},
    # Not state: Raft replicates opaque entries and hands committed ones to an apply callback,
    # as etcd's raft leaves applying to its user.
    "raft": _FOUNDATION | {"crypto", "wire"},
    # Not state: gossip spreads membership and opaque node-state payloads.
    "gossip": _FOUNDATION | {"crypto", "wire"},
    # The compose loader turns files into specs: it needs the spec types and their parsers,
    # nothing that moves bytes between agents.
    "stack": _FOUNDATION | {"state"},
    # leader/voters reads Raft's configuration values (`ConfState`) to propose voter changes, and
    # leader/observation turns gossip's member states into readiness. The leader's duties are
    # handed narrow interfaces, never the node that composes them (node/ is above).
    "leader": _PLANES,
    "executor": _PLANES,
    "proxy": _PLANES,
    # Security uses the transport and sits above the roles whose data it guards: the join
    # protocol, for one, reports the joining host's capacity (executor/hostinfo).
    "security": _ROLES,
    "api": _ROLES | {"security"},
    "node": _ROLES | {"security", "api"},
    # The dashboard is a client of the control socket (api/), not of the agent's internals.
    "dashboard": _ROLES | {"security", "api", "node"},
    # The CLI validates flags with the same parsers as the agent (state/, leader/autoscaler's
    # policy), starts the agent (node/), writes the data dir at init and join (security/).
    "cli": _ROLES | {"security", "api", "node", "dashboard"},
    "__main__": frozenset({"cli"}),
}

# ------------------------------------------------------------------------------- pure modules

# Package -> its modules that drive I/O, the only ones of the package that are not pure.
PURE_PACKAGES: dict[str, tuple[str, ...]] = {
    "swarmlet.state": (),
    "swarmlet.stack": (),
    # the trio driver and the thread it saves through; the durable log written (storage) and
    # read back at open (recovery)
    "swarmlet.raft": ("driver", "disk_thread", "storage", "recovery"),
    "swarmlet.gossip": ("driver",),  # the trio driver (UDP, TCP push/pull, the clock)
    "swarmlet.leader.orchestrator": (),
}
PURE_MODULES: tuple[str, ...] = (
    "swarmlet.wire.bounds",
    "swarmlet.wire.catalog",
    "swarmlet.wire.codec",
    "swarmlet.wire.hosts",
    "swarmlet.wire.peer_rpc",
    "swarmlet.leader.scheduler",
    "swarmlet.leader.voters",
    "swarmlet.leader.autoscaler",
    "swarmlet.leader.depends_on",
    "swarmlet.leader.observation",
    "swarmlet.proxy.routes",
    "swarmlet.proxy.counters",
    "swarmlet.proxy.worker_protocol",
    "swarmlet.proxy.proxy_header",
    "swarmlet.api.control_protocol",
    "swarmlet.security.secret_access",
    "swarmlet.security.propose_auth",
    "swarmlet.security.peer_policy",
    "swarmlet.dashboard.view",
    "swarmlet.dashboard.render",
    "swarmlet.dashboard.cells",
    "swarmlet.dashboard.table",
    "swarmlet.dashboard.panels",
    "swarmlet.dashboard.task_grid",
    "swarmlet.dashboard.transitions",
    "swarmlet.dashboard.lists",
    "swarmlet.dashboard.keys",
    "swarmlet.dashboard.screens",
    "swarmlet.dashboard.task_list",
    "swarmlet.executor.task_container",
    "swarmlet.executor.runtime_types",
    "swarmlet.executor.docker_translate",
)

FORBIDDEN_IMPORTS = frozenset(
    {
        "trio",
        "asyncio",
        "socket",
        "select",
        "selectors",
        "signal",
        "docker",
        "psutil",
        "requests",
        "time",
        "threading",
        "multiprocessing",
        "subprocess",
        "os",
        "secrets",  # chance from the OS
        "uuid",  # uuid1 reads the clock, uuid4 the OS's chance
    }
)
# Module -> forbidden imports it may still use, with the reason.
PURE_EXCEPTIONS: dict[str, frozenset[str]] = {
    # os.path: a stack's working directory defaults to the directory of its first compose file,
    # and its relative paths (env files, bind mounts) resolve against it, as in docker.
    "swarmlet.stack.normalize": frozenset({"os"}),
}
# The clock, read through datetime.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})


# ----------------------------------------------------------------------------- reading imports


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SWARMLET_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of swarmlet by dotted name."""
    return {_module_name(p): p for p in sorted(SWARMLET_DIR.rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"), str(modules()[name]))


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module named by a `from ... import` (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = name.split(".")
    if not _is_package(name):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(name: str) -> Iterator[str]:
    """The dotted name of everything `name` imports, anywhere in its body, made absolute.

    `from P import n` yields "P.n": the module P.n if there is one, else an attribute of P (which
    `internal_imports` walks back to P). `importlib.import_module("...")` with a literal counts.
    """
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node)
            yield from (f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


@cache
def internal_imports(name: str) -> frozenset[str]:
    """The swarmlet modules that `name` imports."""
    found = set()
    for imported in _imports(name):
        if imported.split(".")[0] != "swarmlet":
            continue
        while imported not in modules():  # an attribute of a module, not a submodule
            imported = imported.rpartition(".")[0]
        if imported != name:
            found.add(imported)
    return frozenset(found)


def package_of(module: str) -> str:
    """The layer a module belongs to: "wire" for swarmlet.wire.codec, "errors" for
    swarmlet.errors, "swarmlet" for the package's own __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "swarmlet"


# ------------------------------------------------------------------------------------- layering


def test_every_package_has_a_place_in_the_table_and_the_tiers() -> None:
    packages = {package_of(m) for m in modules()}
    tiered = set().union(*TIERS)
    assert not packages - ALLOWED.keys(), (
        f"packages missing from ALLOWED: {packages - ALLOWED.keys()}"
    )
    assert not packages - tiered, f"packages missing from TIERS: {packages - tiered}"
    assert not ALLOWED.keys() - packages, f"ALLOWED names no package: {ALLOWED.keys() - packages}"


def test_the_table_allows_only_imports_downward() -> None:
    tier = {package: i for i, packages in enumerate(TIERS) for package in packages}
    upward = [
        f"{package} -> {other}"
        for package, allowed in ALLOWED.items()
        for other in sorted(allowed)
        if tier[other] >= tier[package]
    ]
    assert not upward, "ALLOWED breaks the tiers:\n" + "\n".join(upward)


def test_every_import_follows_the_layering() -> None:
    violations = [
        f"{module} imports {imported} ({package_of(module)} may not import {package_of(imported)})"
        for module in sorted(modules())
        for imported in sorted(internal_imports(module))
        if package_of(imported) != package_of(module)
        and package_of(imported) not in ALLOWED.get(package_of(module), frozenset())
    ]
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


# ----------------------------------------------------------------------------------- no cycles


def _strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return components


def _one_cycle(graph: dict[str, frozenset[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path that returns to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def test_no_import_cycles() -> None:
    graph = {m: internal_imports(m) for m in modules()}
    cycles = [" -> ".join(_one_cycle(graph, c)) for c in _strongly_connected(graph)]
    assert not cycles, "import cycles (function-local and TYPE_CHECKING imports count):\n" + (
        "\n".join(cycles)
    )


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a", "d"}),
        "d": frozenset(),
        "e": frozenset({"e"}),
    }
    components = _strongly_connected(graph)
    assert components == [["a", "b", "c"], ["e"]]
    assert _one_cycle(graph, components[0]) == ["a", "b", "c", "a"]
    assert _one_cycle(graph, components[1]) == ["e", "e"]


# -------------------------------------------------------------------------------- pure modules


def pure_modules() -> list[str]:
    """Every module that must be pure; raises if the lists name a module that does not exist."""
    missing = [m for m in PURE_MODULES if m not in modules()]
    pure = list(PURE_MODULES)
    for package, drivers in PURE_PACKAGES.items():
        if package not in modules() or not _is_package(package):
            missing.append(package)
            continue
        missing += [f"{package}.{d}" for d in drivers if f"{package}.{d}" not in modules()]
        exempt = {f"{package}.{d}" for d in drivers}
        pure += [m for m in modules() if m.startswith(f"{package}.") and m not in exempt]
        pure.append(package)
    missing += [m for m in PURE_EXCEPTIONS if m not in modules()]
    if missing:
        raise AssertionError(f"the purity lists name modules that do not exist: {missing}")
    return sorted(set(pure))


@dataclass(frozen=True)
class _Impurity:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def _impurities(name: str, tree: ast.Module) -> list[_Impurity]:
    found = []
    allowed = PURE_EXCEPTIONS.get(name, frozenset())
    random_names: set[str] = set()  # names bound to the `random` module
    datetime_names = {"datetime", "date"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in FORBIDDEN_IMPORTS - allowed:
                    found.append(_Impurity(name, node.lineno, f"imports {alias.name}"))
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
                if alias.name == "datetime":
                    datetime_names.add(alias.asname or "datetime")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_IMPORTS - allowed:
                found.append(_Impurity(name, node.lineno, f"imports from {node.module}"))
            if node.module == "random":
                found += [
                    _Impurity(name, node.lineno, f"imports random.{a.name} (global chance)")
                    for a in node.names
                    if a.name != "Random"
                ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_names
            and node.attr != "Random"
        ):
            found.append(
                _Impurity(name, node.lineno, f"uses {node.value.id}.{node.attr} (global chance)")
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
            and isinstance(node.func.value, ast.Name | ast.Attribute)
            and (
                node.func.value.id
                if isinstance(node.func.value, ast.Name)
                else node.func.value.attr
            )
            in datetime_names
        ):
            found.append(_Impurity(name, node.lineno, f"reads the clock ({node.func.attr}())"))
    return found


def test_pure_modules_import_no_io_threads_clock_or_global_random() -> None:
    impurities = [str(i) for m in pure_modules() for i in _impurities(m, _tree(m))]
    assert not impurities, "pure modules that are not:\n" + "\n".join(impurities)


def test_the_purity_check_catches_global_random_and_the_clock() -> None:
    source = (
        "import random\n"
        "import time\n"
        "from datetime import datetime\n"
        "from random import choice\n"
        "def f(rng: random.Random) -> float:\n"
        "    return rng.random() + random.random() + datetime.now().timestamp()\n"
    )
    found = [i.what for i in _impurities("m", ast.parse(source))]
    assert found == [
        "imports time",
        "imports random.choice (global chance)",
        "uses random.random (global chance)",
        "reads the clock (now())",
    ]


@pytest.mark.parametrize("module", [*PURE_MODULES, *PURE_PACKAGES])
def test_every_listed_pure_module_exists(module: str) -> None:
    assert module in modules(), f"{module} is listed as pure but does not exist"
