"""The import graph of our packages has no cycle and keeps its layers.

Read from the source with ``ast`` (nothing is imported), imports inside functions
included: a lazy import is still a dependency, and a cycle through one is a cycle
the day somebody moves it to the top of the file. Imports under
``if TYPE_CHECKING:`` never run: they count for the layers, not for cycles.

Layers: gpu_audio.server (plumbing inside a server process) imports neither
gpu_audio.host nor gpu_audio.client; gpu_audio.client does not import
gpu_audio.server. gpu_audio.aws sits below both server and host.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpu_audio", "tts", "whisperx_server", "proxy")

# importer prefix -> prefixes it must not import
FORBIDDEN = {
    "gpu_audio.server": (
        "gpu_audio.host",
        "gpu_audio.client",
        "gpu_audio.cli",
        "proxy",
        "tts",
        "whisperx_server",
    ),
    "gpu_audio.client": ("gpu_audio.server", "proxy", "tts", "whisperx_server"),
    "gpu_audio.aws": ("gpu_audio.server", "gpu_audio.host", "gpu_audio.client", "proxy"),
}

# Cycles tolerated for now, each as the set of its modules; the list only shrinks
# (test_known_cycles_are_still_there).
KNOWN_CYCLES: set[frozenset[str]] = set()

# What may be imported inside a function: the engines' own libraries (the GPU stack and
# pocketsphinx: an engine loads its library in load(), in the engine process, so the
# worker and an app running another engine never import it; test_cli checks) and the
# libraries whose import costs a CLI call real time (python -X importtime: boto3
# ~140 ms, huggingface_hub ~220 ms). Everything else is imported at the top of its
# module, where a reader sees it.
LAZY_ALLOWED = (
    "torch",
    "torchaudio",
    "qwen_tts",
    "whisperx",
    "transformers",
    "nltk",
    "faster_whisper",
    "ctranslate2",
    "pocketsphinx",
    "huggingface_hub",
    "boto3",
)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    type_only: bool


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the packages."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False):
    """Every import node with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_stmt(stmt, True)
            for stmt in child.orelse:
                yield from _walk_stmt(stmt, type_only)
        else:
            yield from _walk(child, type_only)


def _walk_stmt(stmt: ast.AST, type_only: bool):
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        yield stmt, type_only
    else:
        yield from _walk(stmt, type_only)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` runs, or its nearest package of ours (None: not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, type_only in _walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # ``from pkg import module`` imports the module
                full = f"{base}.{alias.name}"
                targets.append(full if full in modules else base)
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != name:
                found.append(Import(name, resolved, node.lineno, type_only))
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    modules = find_modules(root, packages)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(edges: list[Import]) -> list[str]:
    bad = []
    for imp in edges:
        for importer, forbidden in FORBIDDEN.items():
            if _within(imp.importer, importer) and any(_within(imp.target, f) for f in forbidden):
                bad.append(f"{imp.importer} imports {imp.target} (line {imp.line})")
    return bad


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), runtime imports only."""
    graph: dict[str, set[str]] = {}
    for imp in edges:
        if not imp.type_only:
            graph.setdefault(imp.importer, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(component: list[str], edges: list[Import]) -> str:
    inside = set(component)
    links = sorted(
        {
            f"{e.importer} -> {e.target} (line {e.line})"
            for e in edges
            if not e.type_only and e.importer in inside and e.target in inside
        }
    )
    return "; ".join(links)


# -- the package itself ----------------------------------------------------------------------


def test_the_graph_covers_every_package_and_lazy_imports():
    edges = import_graph()
    importers = {e.importer.split(".")[0] for e in edges}
    assert importers >= set(PACKAGES)
    # a function-level import is an edge (gpu_audio.cli imports serve inside cmd_serve)
    assert any(e.importer == "gpu_audio.cli" and e.target == "gpu_audio.host.serve" for e in edges)


def test_no_import_cycle():
    edges = import_graph()
    found = [c for c in cycles(edges) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(_describe(c, edges) for c in found)


def test_known_cycles_are_still_there():
    """A known cycle that is gone must leave KNOWN_CYCLES too (the list only shrinks)."""
    present = {frozenset(c) for c in cycles(import_graph())}
    assert KNOWN_CYCLES <= present, KNOWN_CYCLES - present


def test_layers():
    bad = layer_violations(import_graph())
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_aws_is_below_server_and_host():
    edges = import_graph()
    assert not [
        e
        for e in edges
        if e.importer == "gpu_audio.aws"
        and (
            _within(e.target, "gpu_audio.server")
            or _within(e.target, "gpu_audio.host")
            or _within(e.target, "gpu_audio.client")
        )
    ]


# -- the checker finds what it should -----------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.fixture
def fake(tmp_path):
    return _tree(
        tmp_path,
        {
            "gpu_audio/__init__.py": "",
            "gpu_audio/aws.py": "import os\n",
            "gpu_audio/server/__init__.py": "",
            "gpu_audio/server/cloudwatch.py": "from gpu_audio import aws\n\n\ndef f():\n"
            "    from gpu_audio.host.autostop import imds\n",
            "gpu_audio/server/activity.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from ..client import api\n",
            "gpu_audio/host/__init__.py": "from .ec2 import x\n",
            "gpu_audio/host/ec2.py": "from gpu_audio import aws\n",
            "gpu_audio/host/autostop.py": "from gpu_audio.server.activity import read\nfrom . import ec2\n",
            "gpu_audio/client/__init__.py": "",
            "gpu_audio/client/api.py": "import gpu_audio.server.activity\n",
            "proxy/__init__.py": "",
            "proxy/a.py": "def g():\n    from .b import y\n",
            "proxy/b.py": "from proxy import a\n",
        },
    )


def test_checker_finds_lazy_cycles_and_ignores_type_only_ones(fake):
    # proxy.a <-> proxy.b goes through an import inside a function: a cycle. The
    # server.activity -> client.api -> server.activity loop is one only through a
    # type-only import: not a cycle (but a layer violation, below).
    assert cycles(import_graph(fake)) == [["proxy.a", "proxy.b"]]


def test_checker_finds_layer_violations(fake):
    bad = layer_violations(import_graph(fake))
    assert any(v.startswith("gpu_audio.server.cloudwatch imports gpu_audio.host.autostop") for v in bad)
    assert any(v.startswith("gpu_audio.server.activity imports gpu_audio.client.api") for v in bad)
    assert any(v.startswith("gpu_audio.client.api imports gpu_audio.server.activity") for v in bad)
    assert not any(v.startswith("gpu_audio.host") for v in bad)  # host above server is fine


def test_checker_resolves_relative_and_package_imports(fake):
    edges = {(e.importer, e.target) for e in import_graph(fake)}
    assert ("gpu_audio.host", "gpu_audio.host.ec2") in edges
    assert ("gpu_audio.host.autostop", "gpu_audio.host.ec2") in edges
    assert ("gpu_audio.server.cloudwatch", "gpu_audio.aws") in edges
    assert ("gpu_audio.server.activity", "gpu_audio.client.api") in edges  # from ..client import api
    assert ("gpu_audio.server.cloudwatch", "gpu_audio.host.autostop") in edges  # inside f()


def function_level_imports(root: Path = ROOT) -> list[str]:
    """``module:line target`` for each import inside a function that is not of LAZY_ALLOWED."""
    found = []
    for name, path in find_modules(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    targets = [("." * node.level) + (node.module or "")]
                else:
                    continue
                for target in targets:
                    if target.split(".")[0] not in LAZY_ALLOWED:
                        found.append(f"{name}:{node.lineno} {target}")
    return found


def test_imports_sit_at_module_level():
    assert function_level_imports() == []


def test_a_function_level_import_is_found(tmp_path):
    (tmp_path / "gpu_audio").mkdir()
    (tmp_path / "gpu_audio" / "late.py").write_text(
        "def f():\n    import json\n    import torch\n    from .x import y\n"
    )
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    assert function_level_imports(tmp_path) == ["gpu_audio.late:2 json", "gpu_audio.late:4 .x"]
