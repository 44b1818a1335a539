"""The calling task's effective deadline, as ``trio.current_effective_deadline()`` gives it, cheaper.

Every ``send()`` must learn whether its caller's cancel scopes set a deadline, because only
that deadline travels (docs/deadlines.md). Trio's public function answers it by a
recursive walk over every enclosing cancel scope, one Python call and two property reads
per level: about 1 us per send in a task nested six scopes deep, a sixth of an
asynchronous send's whole cost. Trio offers nothing cheaper in public, so this module reads
the same state iteratively: the task's ``CancelStatus`` chain, each status's scope's
deadline and shield, stopping at a shield, ``-inf`` when cancellation is in effect, exactly
as ``CancelStatus.effective_deadline`` does.

It relies on Trio internals (``Task._cancel_status``, ``CancelStatus._scope``,
``._parent``, ``.effectively_cancelled``, ``CancelScope._deadline``, ``._shield``), so:

* they are checked once, at import, against the running Trio's classes; if any is missing,
  ``effective_deadline`` *is* ``trio.current_effective_deadline`` (correct, only slower);
* ``tests/test_deadline.py`` compares the two in every kind of scope nesting (shields,
  cancelled scopes, deadlines moved after entering, nurseries, relative deadlines) and
  asserts the fast path is the one in use, so a Trio release that changes any of this
  fails the test suite instead of changing what travels.

Nothing else in the package touches Trio's internals.
"""

# ruff: noqa: SLF001
# The one place that reads Trio's cancel-scope internals, guarded as said above.

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["FAST", "effective_deadline"]

_INF = math.inf
_NEG_INF = -math.inf


def _walk() -> float:
    """``CancelStatus.effective_deadline``, level for level, as a loop instead of a recursion."""
    status: Any = trio.lowlevel.current_task()._cancel_status
    deadline = _INF
    while True:
        if status.effectively_cancelled:
            return _NEG_INF
        scope = status._scope
        scope_deadline: float = scope._deadline
        if scope_deadline < deadline:
            deadline = scope_deadline
        status = status._parent
        if status is None or scope._shield:
            return deadline


def _internals_present() -> bool:
    """Whether the running Trio still has every internal ``_walk`` reads (checked on its classes)."""
    try:
        from trio._core._run import CancelScope, CancelStatus, Task
    except ImportError:
        return False
    scope_fields = {field.name for field in getattr(CancelScope, "__attrs_attrs__", ())}
    status_fields = {field.name for field in getattr(CancelStatus, "__attrs_attrs__", ())}
    task_fields = {field.name for field in getattr(Task, "__attrs_attrs__", ())}
    return (
        {"_deadline", "_shield"} <= scope_fields
        and {"_scope", "_parent", "effectively_cancelled"} <= status_fields
        and "_cancel_status" in task_fields
    )


FAST = _internals_present()
"""True when ``effective_deadline`` is the iterative walk, False when it is Trio's own function."""

effective_deadline: Callable[[], float] = _walk if FAST else trio.current_effective_deadline
"""The current task's effective deadline: ``trio.current_effective_deadline()``, in one frame."""
