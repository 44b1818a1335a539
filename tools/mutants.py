"""The mutants of a module: each small change ``dev.py mutate`` makes to its syntax tree.

Kept apart from the runner (``mutate.py``: which tests, the child processes, the time box,
the results) because this is the part a reviewer judges a survivor by: what each mutation
is, which nodes are never mutated and why, and how a ``Site`` names one mutant so that it
can be made again (in the forked child, or to match the equivalents list of
docs/mutation.md, which names a mutant by its function, source line and ``what``).

A mutant is ``<`` for ``<=``, ``and`` for ``or``, a constant plus one, a call statement
dropped, ``return x`` made ``return None``, ``min`` for ``max``, ``break`` for
``continue``, a ``not`` dropped, ``True`` for ``False``. Never mutated: docstrings,
annotations, decorators and base classes, imports, ``TYPE_CHECKING`` blocks, ``__all__``
and ``__slots__``, log calls (only their wording would change), strings, and a line
marked ``# pragma: no mutate``.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NO_MUTATE", "Site", "apply", "sites"]

_BINOPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitAnd,
}
_CMPOPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_SYMBOL = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.And: "and", ast.Or: "or",
}  # fmt: skip
_LOG_NAMES = {"logger", "log", "_log", "warnings"}
NO_MUTATE = "pragma: no mutate"


@dataclass(frozen=True)
class Site:
    """One mutant: the ``index``-th node of ``ast.walk`` of the module, and what is done to it."""

    index: int
    line: int
    col: int
    what: str
    scope: str
    """The enclosing function (``Class.method``), or ``(module)`` at the top level."""

    def key(self, module: str) -> str:
        return f"{module}:{self.line}:{self.col}: {self.what}"


def _is_log_call(node: ast.AST) -> bool:
    """A call to ``logger.x(...)``, ``self._log.x(...)``, ``warnings.warn(...)``: messages only."""
    if isinstance(node, ast.Await):
        node = node.value
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    owner = node.func.value
    name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else ""
    return name in _LOG_NAMES


def _never_mutated(node: ast.AST) -> bool:
    """A ``TYPE_CHECKING`` block, ``__all__`` or ``__slots__``, a log call, an import."""
    if isinstance(node, ast.If):
        return "TYPE_CHECKING" in ast.unparse(node.test)
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id in {"__all__", "__slots__"} for t in node.targets)
    if isinstance(node, ast.Expr):
        return _is_log_call(node.value)
    return isinstance(node, ast.ImportFrom | ast.Import)


def _skipped_nodes(tree: ast.Module, lines: Sequence[str]) -> set[int]:
    """ids of nodes not to mutate: docstrings, annotations, ``TYPE_CHECKING`` blocks,
    ``__all__``, log calls, and lines marked ``# pragma: no mutate``."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            first = body[0].value
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                skip(body[0])
        if isinstance(node, ast.arg | ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
            for deco in node.decorator_list:
                skip(deco)
        elif isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                skip(deco)
            for base in node.bases:
                skip(base)
        elif _never_mutated(node):
            skip(node)
        if hasattr(node, "lineno") and NO_MUTATE in lines[node.lineno - 1]:
            skip(node)
    return skipped


def sites(source: str) -> list[Site]:
    """Every mutant of ``source``, in ``ast.walk`` order."""
    tree = ast.parse(source)
    lines = source.splitlines()
    skipped = _skipped_nodes(tree, lines)
    found: list[Site] = []

    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}

    def scope_of(node: ast.AST) -> str:
        names = []
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.append(node.name)
        return ".".join(reversed(names)) or "(module)"

    def add(i: int, node: ast.AST, what: str) -> None:
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        found.append(Site(i, line, col, what, scope_of(node)))

    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOPS:
            new = _BINOPS[type(node.op)]
            add(i, node, f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new]}`")
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                add(i, node, f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[_CMPOPS[type(op)]]}` #{k}")
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            add(i, node, f"`{_SYMBOL[type(node.op)]}` -> `{other}`")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            add(i, node, "`not x` -> `x`")
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            add(i, node, f"`{node.value}` -> `{not node.value}`")
        elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            add(i, node, f"`{node.value!r}` -> `{node.value + 1!r}`")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await):
            add(i, node, "call statement removed")
        elif isinstance(node, ast.Return) and node.value is not None:
            # Not for a constant: ``return None`` is no change, ``return False`` -> None is
            # the same to every caller that tests truth, and True/False are flipped anyway.
            if not isinstance(node.value, ast.Constant):
                add(i, node, "`return x` -> `return None`")
        elif isinstance(node, ast.Break):
            add(i, node, "`break` -> `continue`")
        elif isinstance(node, ast.Continue):
            add(i, node, "`continue` -> `break`")
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"min", "max"}
        ):
            add(i, node, f"`{node.func.id}` -> `{'max' if node.func.id == 'min' else 'min'}`")
    return found


def apply(source: str, site: Site) -> ast.Module:
    """A fresh tree of ``source`` with ``site`` applied."""
    tree = ast.parse(source)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == site.index)
    if isinstance(node, ast.BinOp | ast.AugAssign):
        node.op = _BINOPS[type(node.op)]()
    elif isinstance(node, ast.Compare):
        k = int(site.what.rsplit("#", 1)[1])
        node.ops[k] = _CMPOPS[type(node.ops[k])]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        _replace(tree, node, node.operand)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        node.value = not node.value
    elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        node.value = node.value + 1
    elif isinstance(node, ast.Expr):
        _replace(tree, node, ast.Pass())
    elif isinstance(node, ast.Return):
        node.value = ast.Constant(None)
    elif isinstance(node, ast.Break):
        _replace(tree, node, ast.Continue())
    elif isinstance(node, ast.Continue):
        _replace(tree, node, ast.Break())
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        node.func.id = "max" if node.func.id == "min" else "min"
    return ast.fix_missing_locations(tree)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    ast.copy_location(new, old)
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, name, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[v is old for v in value].index(True)] = new
                return
