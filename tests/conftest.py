"""Shared test configuration.

Skips never hide: under CI (``CI`` set to ``true``/``1``/``yes``/``on``) a skipped test, or
a skipped collection, is turned into a failure that shows the skip's reason; locally each
skip reason is printed on one line (what is missing and how to get it). A skip without a
reason fails everywhere. xfail (strict, see pyproject) is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tls_helpers import PKISet

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKISet:
    """Chain files for the TLS tests (``tls_helpers.py``), made once per session."""
    from tls_helpers import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("pki"))


def in_ci() -> bool:
    """True when running under CI; the same rule as ``tests/interop/reference.py``."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if in_ci() else "dev")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr: Any = report.longrepr
    skipped_here = isinstance(longrepr, tuple) and len(longrepr) == 3  # (path, line, message)
    reason = one_line(str(longrepr[2] if skipped_here else longrepr))
    if reason == "Skipped" or reason.startswith("Skipped:"):  # pytest.skip()'s own prefix
        reason = reason.removeprefix("Skipped").removeprefix(":").strip()
    return reason


def _judge_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Fail a skip under CI or without a reason; otherwise keep it, its reason on one line."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI={os.environ.get('CI')!r}, where a skip is a failure: {reason or '(no reason)'}"
        )
    elif not reason:
        report.outcome = "failed"
        report.longrepr = "skipped without a reason: a skip must name the missing prerequisite"
    elif isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, lineno, _ = report.longrepr
        report.longrepr = (path, lineno, f"Skipped: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    _judge_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    _judge_skip(outcome.get_result())
