"""What docs/architecture.md promises of the code's shape, checked: no import cycle between the library's modules,
no function over 60 lines outside the CLI's argument tables, and a flow whose stages each declare what they read
and fill."""
import ast
from pathlib import Path

import pytest

MINING = Path(__file__).resolve().parent.parent / "mining"


def module_name(path: Path) -> str:
    parts = path.relative_to(MINING.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The library modules `path` imports when it is imported: its module-level imports, not those inside a
    function (deferred on purpose) or under TYPE_CHECKING (annotations only). `from pkg import mod` depends on
    `pkg.mod`, not on what `pkg/__init__.py` imports."""
    deps = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                deps.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names)
    return {d for d in deps if d in modules}


def test_no_import_cycle_between_the_library_modules():
    paths = {module_name(p): p for p in MINING.rglob("*.py")}
    graph = {name: module_imports(path, set(paths)) - {name} for name, path in paths.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(name):] + [name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert len(done) == len(graph) > 100


def test_no_function_over_60_lines_outside_the_cli_argument_tables():
    long = []
    for path in MINING.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                if not (path.parent.name == "cli" and node.name == "register"):   # argument tables
                    long.append(f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_every_shipped_stage_declares_what_it_reads_and_fills():
    from mining.stages import FLOW, stage_class

    for name in FLOW:
        cls = stage_class(name)
        assert cls.name == name and cls.reads, name
        assert cls.fills or name == "refine", name   # refine adds a caption only when its model has one
