"""Mutation testing for trio_chirp: ``python3 dev.py mutate [--minutes N] [module ...]``.

This module runs mutants; ``mutants.py`` makes them (what each change is, what is never
changed). The two are apart because they answer different questions: "is this survivor
a real gap?" is judged from ``mutants.py`` alone, "which tests, how long, what came out"
from here.

For each module (``_sniff``, ``_protocol.parser``, ``_node._links``; all of ``TESTS`` when
none is named) this runs the fast tests that cover the module (``TESTS``, the one mapping)
against each of its mutants, and prints killed / survived / timed out per module. A mutant
no test notices is a survivor: either a missing test, or an equivalent mutant (it cannot
change behaviour), which is listed with its reason in ``docs/mutation.md`` (read here, and
counted apart).

How a mutant runs: the source on disk is never changed. This process imports pytest and the
heavy libraries once, then forks one child per mutant; the child puts an import hook in
front of ``sys.meta_path`` that compiles the mutated tree for that one module and runs
``pytest.main`` on the module's tests (``-x``, output to a log). A child that runs longer
than ``3 x`` the clean run plus 10 s is killed with its process group: timed out (a hang the
tests would catch by their own timeout, counted as killed). One child at a time, at
``nice 10``: the machine is shared.

The time box (``--minutes``, default 30) is shared between the modules; each gets an equal
part of what is left, and what one leaves unused goes to the next. Mutants are tried in a
seeded shuffled order, so a budget cut leaves a fair sample; the rest are "not run".
Results go to ``.cache/mutation/<module>.json``; ``--survivors`` prints them again.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import CodeType, ModuleType

from mutants import apply, sites

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trio_chirp"
RESULTS = Path(os.environ.get("MUTATE_RESULTS", ROOT / ".cache" / "mutation"))
EQUIVALENTS_DOC = ROOT / "docs" / "mutation.md"
DEFAULT_MINUTES = 30.0

_SNIFFING = [
    "tests/test_tls.py::test_tls_from_a_local_source_is_sniffed_and_served",
    "tests/test_tls.py::test_sniffing_and_tls_handshakes_count_against_max_handshakes",
    "tests/test_tls.py::test_a_plaintext_peer_on_port_5635_is_not_taken_for_tls",
]
_NODE = [
    "tests/test_unit_remote_table.py",
    "tests/test_unit_remote_table_edges.py",
    "tests/test_unit_delivery.py",
    "tests/test_unit_node_log.py",
    "tests/test_node_pacing.py",
    "tests/test_node_close_and_checkpoints.py",
    "tests/test_node_send_edges.py",
    "tests/test_node_links_edges.py",
    "tests/test_connection_failures.py",
    "tests/test_connection_writes.py",
    "tests/test_connection_traffic.py",
    "tests/test_remote_connections.py",
    "tests/test_pipelining.py",
    "tests/test_reading.py",
    "tests/test_receive_reading.py",
    "tests/test_receive_reading_hostile.py",
    "tests/test_receive_reading_neighbours.py",
    "tests/test_response_reading.py",
    "tests/test_request_reading_hostile.py",
    "tests/test_request_reading_connections.py",
    "tests/test_noop_probes.py",
    "tests/test_node_surface.py",
    "tests/test_node_memory.py",
    "tests/test_node_pins.py",
    "tests/test_requests.py",
    "tests/test_node_bounded_memory.py",
    "tests/test_node_limits.py",
    "tests/test_node_properties.py",
    "tests/test_memory_network.py",
    "tests/test_lockups.py",
    "tests/test_hostile_handshake.py",
    "tests/test_announcement.py",
    "tests/test_testing_nodes.py",
    "tests/test_errors.py",
    "tests/test_user_defects.py",
    # The two of that file that run a subprocess (mypy, a fresh interpreter): seconds, and
    # blind to a mutant.
    "--deselect=tests/test_user_defects.py::test_an_app_using_received_addresses_type_checks",
    "--deselect=tests/test_user_defects.py::test_the_library_prints_nothing_without_the_applications_logging_config",
    "tests/test_user_defects_tcp.py",
    "tests/test_node_tcp.py",
    # Routers and workers use the node's send with its options (SendOptions).
    "tests/test_unit_router_workers.py",
    "tests/test_unit_router_more.py",
    "tests/test_unit_router_return.py",
]
"""The node's tests in this process, on the in-memory network and loopback TCP (a second or
two each). An entry that starts with ``-`` is a pytest option (``--deselect``)."""

TESTS: dict[str, list[str]] = {
    # modules that do no I/O of their own
    "_protocol.codec": ["tests/test_protocol_parser.py", "tests/test_protocol_vectors.py"],
    "_protocol.parser": ["tests/test_protocol_parser.py", "tests/test_protocol_vectors.py"],
    "_protocol.events": ["tests/test_protocol_parser.py", "tests/test_protocol_vectors.py"],
    "_header": ["tests/test_header.py"],
    "_sniff": ["tests/test_unit_sniff.py", *_SNIFFING],
    "_inbox": [
        "tests/test_unit_admission_inbox.py",
        "tests/test_unit_limits_inbox_edges.py",
        "tests/test_receive_reading.py",
        "tests/test_receive_reading_storm.py",
    ],
    "_slots": ["tests/test_unit_slots.py", "tests/test_unit_admission_inbox.py", "tests/test_node_memory.py"],
    "_limits": [
        "tests/test_unit_admission_inbox.py",
        "tests/test_unit_limits_inbox_edges.py",
        "tests/test_node_limits.py",
    ],
    "_requests": [
        "tests/test_unit_request_table.py",
        "tests/test_unit_requests_service.py",
        "tests/test_requests.py",
        "tests/test_response_reading.py",
    ],
    "_ratelimit": [
        "tests/test_unit_ratelimit.py",
        "tests/test_node_surface.py::test_log_limiter_first_of_each_key_then_a_summary",
    ],
    "_config": ["tests/test_unit_config_limits.py", "tests/test_config.py"],
    "_message": ["tests/test_unit_message.py", "tests/test_message.py"],
    "_address": ["tests/test_config.py", "tests/test_message.py", "tests/test_unit_address.py"],
    # the node, the connection, the remote, routers and workers
    "_node._delivery": _NODE,
    "_node._links": [*_NODE, "tests/test_tls.py"],
    "_node._remotes": _NODE,
    "_node._sending": [*_NODE, "tests/test_message.py"],
    "_node._chirp": _NODE,
    "_node._log": _NODE,
    "_connection": [*_NODE, "tests/test_tls.py"],
    "_remote": _NODE,
    "_reading": [*_NODE, "tests/test_tls.py"],
    "_deadline": ["tests/test_deadline.py", "tests/test_requests.py"],
    "_tcp": ["tests/test_tcp_stream.py", "tests/test_node_tcp.py", "tests/test_hostile_tcp.py"],
    "_router": [
        "tests/test_unit_router_workers.py",
        "tests/test_unit_router_more.py",
        "tests/test_unit_router_return.py",
        "tests/test_requests.py",
        "tests/test_lockup_hunt.py::test_router_forgets_identities_by_their_deadline",
    ],
    "_workers": ["tests/test_unit_router_workers.py", "tests/test_requests.py"],
}
"""Module (under ``trio_chirp``) -> the fast tests that cover it. Tests that run the package
in another process (interop, examples, pytester subprocesses) cannot see a mutant and are
left out, and so is the lock-up hunt (minutes, not seconds)."""

# --- running ---------------------------------------------------------------------------------


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the one mutated module from its code object; everything else as usual."""

    def __init__(self, name: str, path: Path, code: CodeType) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(self.path)
        exec(self.code, module.__dict__)


@dataclass
class Outcome:
    key: str
    status: str  # killed, survived, timeout, error, clean
    seconds: float
    source_line: str = ""
    scope: str = ""


def _run_child(
    module: str, code: CodeType | None, tests: list[str], log: Path, limit: float
) -> tuple[str, float]:
    """Fork; the child runs the tests (against ``code`` for ``module``); ``(status, seconds)``."""
    import pytest

    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        status = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if code is not None:
                sys.meta_path.insert(0, _MutantFinder(f"trio_chirp.{module}", _path(module), code))
            args = ["-x", "-q", "-p", "no:cacheprovider", "--timeout", str(int(limit) + 5)]
            args += ["-W", "ignore::pytest.PytestAssertRewriteWarning", *tests]
            status = int(pytest.main(args))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    deadline = started + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.02)  # a poll of our own child process, not a test waiting on a condition
    seconds = time.monotonic() - started
    code_ = os.waitstatus_to_exitcode(status)
    if code_ == 0:
        return "survived", seconds
    if code_ in (1, 2, 3):  # tests failed, a collection error (the mutant does not import), internal
        return "killed", seconds
    return "error", seconds  # 4: usage, 5: no tests collected, or a signal


def _existing(tests: list[str]) -> list[str]:
    """The tests of ``tests`` that exist, with its pytest options; none if no test exists
    (options alone would make pytest run the whole suite)."""
    found = [t for t in tests if not t.startswith("-") and (ROOT / t.split("::")[0]).exists()]
    return [t for t in tests if t in found or t.startswith("-")] if found else []


def _path(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def normalize(name: str) -> str:
    name = name.removesuffix(".py").replace("/", ".").removeprefix("trio_chirp.")
    return name


def equivalents() -> dict[str, set[tuple[str, str, str]]]:
    """Survivors judged equivalent, from the table in docs/mutation.md: module -> {(where,
    source line, what)}. A row is ``| `module` | `where` | `source line` | what | reason |``;
    matching ignores line numbers, so a row outlives edits elsewhere in the module."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    if not EQUIVALENTS_DOC.exists():
        return found
    text = EQUIVALENTS_DOC.read_text()
    heading = "## Survivors judged equivalent"
    section = text.split(heading, 1)[1] if heading in text else ""
    for row in section.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        if len(cells) >= 5 and cells[0].startswith("`"):
            module, where, line = (c.strip("`").strip() for c in cells[:3])
            found.setdefault(module, set()).add((where, line, cells[3]))
    return found


@dataclass
class Tally:
    module: str
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    equivalent: int = 0
    error: int = 0
    not_run: int = 0
    clean_seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)

    def rate(self) -> float | None:
        judged = self.killed + self.timeout + self.survived
        return None if judged == 0 else (self.killed + self.timeout) / judged

    def line(self) -> str:
        rate = self.rate()
        shown = "n/a" if rate is None else f"{rate:.0%}"
        return (
            f"{self.module:18} {self.mutants:4} mutants: killed {self.killed:3}, timed out {self.timeout:2},"
            f" survived {self.survived:3} (+{self.equivalent} equivalent), errors {self.error},"
            f" not run {self.not_run:3}; killed of non-equivalent run: {shown}"
        )


def run_module(module: str, tests: list[str], budget: float, rng_seed: int) -> Tally:
    path = _path(module)
    source = path.read_text()
    lines = source.splitlines()
    tally = Tally(module)
    if not tests:
        print(f"{module}: none of its tests exist: {TESTS[module]}", flush=True)
        tally.error = 1
        return tally
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"{module}.log"
    started = time.monotonic()
    os.chdir(ROOT)
    status, clean = _run_child(module, None, tests, log, 600.0)
    tally.clean_seconds = clean
    if status != "survived":
        print(f"{module}: the tests fail without a mutant ({status}); see {log}", flush=True)
        tally.error = 1
        return tally
    limit = 3 * clean + 10
    all_sites = sites(source)
    tally.mutants = len(all_sites)
    order = list(all_sites)
    random.Random(f"{module}:{rng_seed}").shuffle(order)
    known = equivalents().get(module, set())
    for site in order:
        line_text = lines[site.line - 1].strip()
        if time.monotonic() - started + clean > budget:
            tally.not_run += 1
            tally.outcomes.append(Outcome(site.key(module), "not run", 0.0, line_text, site.scope))
            continue
        code = compile(apply(source, site), str(path), "exec")
        status, seconds = _run_child(module, code, tests, log, limit)
        if status == "survived" and (site.scope, line_text, site.what) in known:
            status = "equivalent"
        setattr(tally, status, getattr(tally, status) + 1)
        tally.outcomes.append(Outcome(site.key(module), status, seconds, line_text, site.scope))
        if status == "survived":
            print(f"  survived {site.key(module)}    | {site.scope} | {line_text}", flush=True)
    tally.outcomes.sort(key=lambda o: (int(o.key.split(":")[1]), o.key))
    (RESULTS / f"{module}.json").write_text(
        json.dumps({**asdict(tally), "rate": tally.rate()}, indent=1) + "\n"
    )
    return tally


def _survivors(modules: list[str]) -> Iterator[str]:
    for module in modules:
        file = RESULTS / f"{module}.json"
        if file.exists():
            for o in json.loads(file.read_text())["outcomes"]:
                if o["status"] == "survived":
                    yield f"{o['key']}    | {o.get('scope', '')} | {o['source_line']}"


def _no_longer_made(outcome: dict[str, str]) -> bool:
    """A ``return <constant>`` -> ``return None`` mutant (made before that rule)."""
    if not outcome["key"].endswith("`return x` -> `return None`"):
        return False
    try:
        node = ast.parse(outcome["source_line"]).body[0]
    except (SyntaxError, IndexError):
        return False
    return isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)


def _report(modules: list[str]) -> str:
    """The saved results as a Markdown table (equivalents judged by the current list)."""
    head = "| module | mutants | run | killed | timed out | survived | equivalent | not run | killed* |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    known = equivalents()
    for module in modules:
        file = RESULTS / f"{module}.json"
        if not file.exists():
            continue
        current = {site.key(module): site.scope for site in sites(_path(module).read_text())}
        # Not the mutants an older mutator made and this one does not (return <constant>).
        outcomes = [o for o in json.loads(file.read_text())["outcomes"] if not _no_longer_made(o)]
        count = dict.fromkeys(("killed", "timeout", "survived", "equivalent", "not run", "error"), 0)
        for o in outcomes:
            status = o["status"]
            what = o["key"].split(": ", 1)[1]
            if status in ("survived", "equivalent"):
                where = (o.get("scope") or current.get(o["key"], ""), o["source_line"], what)
                status = "equivalent" if where in known.get(module, set()) else "survived"
            count[status] += 1
        run = len(outcomes) - count["not run"]
        judged = count["killed"] + count["timeout"] + count["survived"]
        rate = "n/a" if not judged else f"{(count['killed'] + count['timeout']) / judged:.0%}"
        rows.append(
            f"| `{module}` | {len(outcomes)} | {run} | {count['killed']} | {count['timeout']} |"
            f" {count['survived']} | {count['equivalent']} | {count['not run']} | {rate} |"
        )
    rows.append("\n\\* killed or timed out, of the mutants run and not judged equivalent")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev.py mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules under trio_chirp (default: every mapped one)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="time box for the whole run")
    parser.add_argument(
        "--tests", nargs="+", metavar="TEST", help="these tests, not the mapped ones (after the modules)"
    )
    parser.add_argument("--seed", type=int, default=0, help="order in which mutants are tried")
    parser.add_argument("--list", action="store_true", help="list the modules, their tests and mutant counts")
    parser.add_argument("--survivors", action="store_true", help="print the last run's survivors")
    parser.add_argument("--report", action="store_true", help="the last run's figures as a Markdown table")
    args = parser.parse_args(argv)
    modules = [normalize(m) for m in args.modules] or list(TESTS)
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        parser.error(f"no tests mapped for {unknown}: add them to TESTS in tools/mutate.py")
    if args.list:
        for m in modules:
            print(f"{m:18} {len(sites(_path(m).read_text())):4} mutants  {' '.join(TESTS[m])}")
        return 0
    if args.survivors:
        for line in _survivors(modules):
            print(line)
        return 0
    if args.report:
        print(_report(modules))
        return 0
    os.nice(10)
    # Imported once here, not once per mutant. Hypothesis brings its pytest plugin, whose
    # asserts pytest can then not rewrite: that warning is switched off in the children.
    import hypothesis  # noqa: F401
    import msgpack  # noqa: F401
    import pytest  # noqa: F401
    import trio
    import trio.testing  # noqa: F401

    assert "trio_chirp" not in sys.modules  # a child must import the mutant, not a cached module
    budget = args.minutes * 60
    started = time.monotonic()
    tallies: list[Tally] = []
    # The test files as they are now (files added during the run do not change it).
    chosen = {m: args.tests or TESTS[m] for m in modules}
    tests = {m: _existing(chosen[m]) for m in modules}
    for k, module in enumerate(modules):
        left = budget - (time.monotonic() - started)
        share = left / (len(modules) - k)
        print(f"{module}: {share / 60:.1f} min", flush=True)
        tally = run_module(module, tests[module], share, args.seed)
        tallies.append(tally)
        print(tally.line(), flush=True)
    print("\nsummary")
    for tally in tallies:
        print(tally.line())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main())
