"""The layout rules of docs/ARCHITECTURE.md, checked on the source: layering and sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mmdrfuse_ros"
ROS_FREE = ("fusion", "metrics", "detection", "datasets", "settings", "msgs", "training")
MAY_IMPORT_NODES = ("nodes", "replay")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "weights" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module or ""]).rstrip("."))
            else:
                names.add(node.module or "")
    return names


def _area(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layering(path: Path) -> None:
    imports = _imports(path)
    area = _area(path)
    if area in ROS_FREE:
        ros = sorted(n for n in imports if n.split(".")[0] in ("rclpy", "rcl_interfaces"))
        assert not ros, f"{path.name} is in the ROS-free core but imports {ros}"
    if area not in MAY_IMPORT_NODES:
        nodes = sorted(n for n in imports if n.startswith("mmdrfuse_ros.nodes"))
        assert not nodes, f"{path.name} ({area or 'top level'}) imports node code: {nodes}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sizes(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path.name} is longer than {MAX_FILE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{path.name}:{node.lineno} {node.name}() is {length} lines "
                f"(limit {MAX_FUNCTION_LINES})"
            )
