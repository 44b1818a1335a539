"""The skip policy of ``tests/conftest.py``, run on small inner test suites with ``pytester``.

Under CI any skip fails the run, with the skip's reason in the failure text; locally a skip
stays a skip and its reason is one line. The inner runs load a verbatim copy of our
conftest, in process; it loads a Hypothesis profile (process-wide), which is put back.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings

CONFTEST = (Path(__file__).resolve().parent / "conftest.py").read_text()

SUITE = """
import pytest

def test_needs_a_tool():
    pytest.skip("frobnicate not found\\n  install it with `apt-get install frobnicate`")

@pytest.mark.skipif(True, reason="no frobnicate device")
def test_marked():
    pass

@pytest.fixture
def device():
    pytest.skip("no device at /dev/frob")

def test_with_fixture(device):
    pass

def test_passes():
    assert True

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""

MODULE_SKIP = """
import pytest

pytest.skip("module needs libfrob", allow_module_level=True)

def test_never_collected():
    pass
"""

REASONS = (
    "frobnicate not found install it with `apt-get install frobnicate`",
    "no frobnicate device",
    "no device at /dev/frob",
    "module needs libfrob",
)


@pytest.fixture(autouse=True)
def _keep_hypothesis_profile() -> Iterator[None]:
    """The inner conftest loads the profile its CI value picks; put ours back afterwards."""
    ours = settings()
    yield
    settings.register_profile("_outer", ours)
    settings.load_profile("_outer")


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE, test_module_skip=MODULE_SKIP)
    # A failed collection interrupts the run; go on so that every case is seen in one run.
    return pytester.runpytest("-p", "no:cacheprovider", "-ra", "-q", "--continue-on-collection-errors")


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_under_ci_every_skip_fails_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    result = _run(pytester, monkeypatch, ci)
    assert result.ret != 0
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0
    # the call-phase skip fails; the setup-phase ones (mark, fixture) and the module are errors
    assert outcomes.get("failed") == 1
    assert outcomes.get("errors") == 3
    assert outcomes.get("passed") == 1
    assert outcomes.get("xfailed") == 1  # xfail is not a skip
    text = result.stdout.str()
    for reason in REASONS:
        assert f"skipped under CI='{ci}', where a skip is a failure: {reason}" in text


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_locally_a_skip_stays_a_skip_with_a_one_line_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = _run(pytester, monkeypatch, ci)
    assert result.ret == 0
    assert result.parseoutcomes() == {"passed": 1, "skipped": 4, "xfailed": 1}
    skip_lines = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert len(skip_lines) == 4
    for reason in REASONS:
        assert sum(line.endswith(f": {reason}") for line in skip_lines) == 1, (reason, skip_lines)


def test_a_skip_without_a_reason_fails_even_locally(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile("import pytest\n\ndef test_silent():\n    pytest.skip()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    assert result.ret != 0
    assert result.parseoutcomes() == {"failed": 1}
    result.stdout.fnmatch_lines(["*skipped without a reason: a skip must name the missing prerequisite*"])


def _reference_module() -> ModuleType:
    """``tests/interop/reference.py``, loaded under its own name (that directory is no package)."""
    path = Path(__file__).resolve().parent / "interop" / "reference.py"
    spec = importlib.util.spec_from_file_location("_reference_for_skip_policy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interop_skip_reason_is_one_line_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _reference_module()
    monkeypatch.delenv("CI", raising=False)
    missing = reference.ReferenceUnavailable(
        "cannot build libchirp==1.2.1b3: missing headers uv.h (Debian: libuv1-dev). "
        f"Install the system packages, e.g. `{reference.SYSTEM_PACKAGES_HINT}`"
    )
    build_failed = reference.ReferenceUnavailable(
        "building libchirp==1.2.1b3 failed at `pip install ...` (full log: /x/build.log):\n"
        "error: uv.h: No such file\n  compilation terminated.\n"
    )
    for exc, want in [
        (missing, "missing headers uv.h (Debian: libuv1-dev). Install the system packages, e.g. `apt-get"),
        (build_failed, "failed at `pip install ...` (full log: /x/build.log)"),
    ]:
        monkeypatch.setattr(reference, "_result", exc)
        with pytest.raises(pytest.skip.Exception) as info:
            reference.require_reference()
        text = str(info.value)
        assert "\n" not in text
        assert text.startswith("reference libchirp unavailable: ")
        assert want in text
    monkeypatch.setenv("CI", "true")  # under CI it is an error, never a skip
    with pytest.raises(reference.ReferenceUnavailable):
        reference.require_reference()
