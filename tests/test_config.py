"""Config: libchirp's defaults and ranges (vector j), our deliberate differences, derived
values, error messages, and docs/config.md kept in step with the dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from trio_chirp import Config

ROOT = Path(__file__).resolve().parents[1]
VECTORS = Path(__file__).resolve().parent / "vectors"


def vector(name: str) -> dict[str, Any]:
    """A capture from tests/vectors (shipped with the tests: missing is an error, not a skip)."""
    path = VECTORS / name
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# libchirp's upper-case names -> our fields and value conversion
FIELD_OF = {
    "PORT": "port",
    "TIMEOUT": "timeout",
    "REUSE_TIME": "reuse_time",
    "BACKLOG": "backlog",
    "MAX_SLOTS": "max_slots",
    "SYNCHRONOUS": "synchronous",
    "BUFFER_SIZE": "buffer_size",
    "MAX_MSG_SIZE": "max_msg_size",
    "BIND_V4": "bind_v4",
    "BIND_V6": "bind_v6",
    "IDENTITY": "identity",
    "CERT_CHAIN_PEM": "cert_chain_pem",
    "DH_PARAMS_PEM": "dh_params_pem",
    "DISABLE_ENCRYPTION": "disable_encryption",
}
NOT_OURS = {"DISABLE_SIGNALS", "AUTO_RELEASE"}  # C signal handling; the binding's queue API


def ours(libchirp_config: dict[str, Any]) -> dict[str, Any]:
    kwargs = {FIELD_OF[key]: value for key, value in libchirp_config.items() if key not in NOT_OURS}
    if "identity" in kwargs:
        kwargs["identity"] = bytes.fromhex(kwargs["identity"])
    return kwargs


# --- defaults and vector j ------------------------------------------------------------------

# field -> (libchirp's default, ours): 100 MiB per connection made the worst case ~100 GiB.
DEFAULTS_DIFFERENT_ON_PURPOSE = {"max_msg_size": (100 * 1024 * 1024, 1024 * 1024)}


def test_defaults_are_libchirps() -> None:
    defaults = vector("j_config_validation.json")["observations"]["defaults_from_binding"]
    assert set(defaults) <= set(FIELD_OF) | NOT_OURS
    expected = ours(defaults)
    config = Config()
    for field, value in expected.items():
        if field in DEFAULTS_DIFFERENT_ON_PURPOSE:
            assert (value, getattr(config, field)) == DEFAULTS_DIFFERENT_ON_PURPOSE[field], field
            continue
        assert getattr(config, field) == value, field
    assert config.identity == bytes(16)
    assert (config.cert_chain_pem, config.dh_params_pem) == (None, None)


# what (as written in the capture) -> our kwargs and the field an error must name
J_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "PORT=1024 -> rejected": ({"port": 1024}, "port"),
    "PORT=1025 -> accepted": ({"port": 1025}, None),
    "BACKLOG=128 -> rejected": ({"backlog": 128}, "backlog"),
    "BACKLOG=127 -> accepted": ({"backlog": 127}, None),
    "TIMEOUT=0.05 -> rejected": ({"timeout": 0.05}, "timeout"),
    "TIMEOUT=1200.5 -> rejected": ({"timeout": 1200.5}, "timeout"),
    "TIMEOUT=1200 (REUSE_TIME becomes 3600) -> accepted": ({"timeout": 1200}, None),
    "REUSE_TIME=0.4,TIMEOUT=0.1 (effective 0.4) -> rejected": (
        {"reuse_time": 0.4, "timeout": 0.1},
        "reuse_time",
    ),
    "REUSE_TIME=0.4,TIMEOUT=0.2 (effective 0.6) -> accepted": ({"reuse_time": 0.4, "timeout": 0.2}, None),
    "REUSE_TIME=3601 -> rejected": ({"reuse_time": 3601}, "reuse_time"),
    "TIMEOUT=10,REUSE_TIME=5 (effective 30) -> accepted": ({"timeout": 10, "reuse_time": 5}, None),
    "SYNCHRONOUS,MAX_SLOTS=5 (forced to 1) -> accepted": ({"synchronous": True, "max_slots": 5}, None),
    "async,MAX_SLOTS=32 -> accepted": ({"synchronous": False, "max_slots": 32}, None),
    "async,MAX_SLOTS=33 -> rejected": ({"synchronous": False, "max_slots": 33}, "max_slots"),
    "BUFFER_SIZE=1023 -> rejected": ({"buffer_size": 1023}, "buffer_size"),
    "BUFFER_SIZE=1024 -> accepted": ({"buffer_size": 1024}, None),
    # Ours on purpose: cert files are checked when the node starts, not by Config.
    "encryption on, no cert files -> rejected": ({"disable_encryption": False}, None),
}
NODE_START_CASES = {"PORT in use -> CH_EADDRINUSE (4) -> OSError"}  # a bind failure, not a Config matter
DIFFERENT_ON_PURPOSE = {"encryption on, no cert files -> rejected"}


def test_every_config_check_of_the_capture_is_mapped() -> None:
    checks = vector("j_config_validation.json")["checks"]
    assert {c["what"] for c in checks} == set(J_CASES) | NODE_START_CASES
    assert all(c["ok"] for c in checks)


@pytest.mark.parametrize("what", sorted(J_CASES))
def test_config_case_from_the_capture(what: str) -> None:
    detail = next(c["detail"] for c in vector("j_config_validation.json")["checks"] if c["what"] == what)
    kwargs, field = J_CASES[what]
    accepted = detail["accepted"] != (what in DIFFERENT_ON_PURPOSE)
    assert accepted == (field is None)
    if accepted:
        config = Config(**kwargs)
        for name, value in kwargs.items():
            assert getattr(config, name) == value
        return
    assert detail["exception"] == "ValueError"
    assert field is not None
    with pytest.raises(ValueError, match=rf"^Config\.{field}=") as info:
        Config(**kwargs)
    assert repr(kwargs[field]) in str(info.value)
    assert "allowed" in str(info.value)


def test_derived_values_named_in_the_capture() -> None:
    assert Config(timeout=1200).effective_reuse_time == 3600
    assert Config(reuse_time=0.4, timeout=0.2).effective_reuse_time == pytest.approx(0.6)
    assert Config(timeout=10, reuse_time=5).effective_reuse_time == 30
    assert Config(synchronous=True, max_slots=5).effective_slots == 1
    assert Config(synchronous=False, max_slots=32).effective_slots == 32


@pytest.mark.parametrize(
    "name",
    [
        "a_sync_outbound_hello.json",
        "b_async_outbound_hello.json",
        "c_inbound_req_ack_then_ack_and_reply.json",
        "d_header_both_directions.json",
        "e_noop_probe_before_message.json",
        "f_receiver_validation.json",
        "g_timeouts_and_failures.json",
        "h_receive_slots_backpressure.json",
        "k_tls.json",
        "m_request_and_late_release.json",
    ],
)
def test_every_captured_node_config_is_a_valid_config(name: str) -> None:
    libchirp_config = vector(name)["setup"]["node_config"]
    kwargs = ours(libchirp_config)
    config = Config(**kwargs)
    for field, value in kwargs.items():
        assert getattr(config, field) == value


def test_vector_e_noop_threshold() -> None:
    """TIMEOUT=1, REUSE_TIME=2: R = 3 s, NOOP after 2.25 s idle (the capture idled 2.6 s)."""
    e = vector("e_noop_probe_before_message.json")
    config = Config(**ours(e["setup"]["node_config"]))
    assert config.effective_reuse_time == e["observations"]["effective_reuse_time_s"]
    assert config.noop_threshold == e["observations"]["noop_threshold_s"]
    assert config.noop_threshold < e["observations"]["idle_gap_s"] < config.effective_reuse_time


def test_vector_g_connect_timeout() -> None:
    """TIMEOUT=0.5: libchirp gave up connecting after ~2 * TIMEOUT = 1.0 s."""
    g = vector("g_timeouts_and_failures.json")
    config = Config(**ours(g["setup"]["node_config"]))
    assert config.connect_timeout == 1.0
    observed = g["observations"]["cases"]["connect_timeout_no_peer_handshake"]["after_s"]
    assert observed == pytest.approx(config.connect_timeout, abs=0.1)


# --- our deliberate differences -------------------------------------------------------------


def test_port_zero_is_allowed() -> None:
    assert Config(port=0).port == 0


def test_configured_identity_is_used_whole() -> None:
    i = vector("i_configured_identity.json")["setup"]
    configured = bytes.fromhex(i["configured_identity"])
    assert i["node_identity_reported_by_api"] != i["configured_identity"]  # libchirp's truncation
    assert Config(identity=configured).identity == configured


def test_cert_files_are_not_checked_by_config() -> None:
    config = Config(cert_chain_pem="/nonexistent/chain.pem", dh_params_pem=Path("/nonexistent/dh.pem"))
    assert config.cert_chain_pem == "/nonexistent/chain.pem"
    assert not config.disable_encryption


def test_incoming_handshake_has_a_deadline() -> None:
    """libchirp waits for ever for an accepted peer's handshake (vector f); we do not."""
    assert Config().effective_handshake_timeout == Config().connect_timeout == 10.0
    assert Config(handshake_timeout=3).effective_handshake_timeout == 3


# --- ranges and messages ---------------------------------------------------------------------

RANGES: list[tuple[str, list[Any], list[Any], str]] = [
    ("port", [0, 1025, 65535], [-1, 1, 1024, 65536], "0 (pick a free port) or 1025..65535"),
    ("backlog", [0, 127], [-1, 128], "0..127"),
    ("timeout", [0.1, 1, 1200, 1200.0], [0.0999, 0, -1.0, 1200.5, math.inf], "0.1..1200.0 seconds"),
    ("reuse_time", [0, 0.5, 3600], [-0.1, 3600.5, math.inf], "0.0..3600.0 seconds"),
    ("max_slots", [0, 1, 32], [-1, 33], "0 (means 16) or 1..32"),
    ("buffer_size", [0, 1024, 2**32 - 1], [-1, 1, 1023, 2**32], "0 (means 64 KiB) or 1024..4294967295"),
    ("max_msg_size", [0, 2**32 - 1], [-1, 2**32], "0..4294967295"),
    ("send_queue_size", [1, 2**31 - 1], [0, 2**31], "1..2147483647"),
    ("handshake_timeout", [0, 0.5, 3600], [-0.5, 3600.5], "0.0..3600.0 seconds"),
]


@pytest.mark.parametrize(("field", "good", "bad", "allowed"), RANGES, ids=[r[0] for r in RANGES])
def test_range_bounds_and_message(field: str, good: list[Any], bad: list[Any], allowed: str) -> None:
    for value in good:
        assert getattr(Config(**{field: value}), field) == value
    for value in bad:
        with pytest.raises(ValueError, match=re.escape(f"Config.{field}={value!r}")) as info:
            Config(**{field: value})
        assert str(info.value).endswith(f"allowed {allowed}")


def test_effective_reuse_time_message_explains_the_derivation() -> None:
    with pytest.raises(ValueError, match=re.escape("Config.reuse_time=0.4")) as info:
        Config(reuse_time=0.4, timeout=0.1)
    message = str(info.value)
    assert "max(reuse_time, 3*timeout)=0.4" in message
    assert "0.5..3600" in message


def test_nan_is_refused() -> None:
    for field in ("timeout", "reuse_time", "handshake_timeout"):
        with pytest.raises(ValueError, match=rf"Config\.{field}=nan"):
            Config(**{field: math.nan})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", "2998"),
        ("port", True),
        ("backlog", 1.0),
        ("max_slots", None),
        ("timeout", "5"),
        ("timeout", False),
    ],
)
def test_wrong_types_are_type_errors(field: str, value: object) -> None:
    expected = rf"Config\.{field} must be an? (int|number), got {type(value).__name__}"
    with pytest.raises(TypeError, match=expected):
        Config(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bind_v4": "::1"}, "Config.bind_v4='::1' is not an IPv4 address literal"),
        ({"bind_v4": "localhost"}, "Config.bind_v4='localhost' is not an IPv4 address literal"),
        ({"bind_v6": "127.0.0.1"}, "Config.bind_v6='127.0.0.1' is not an IPv6 address literal"),
        ({"bind_v4": None, "bind_v6": None}, "Config.bind_v4 and Config.bind_v6 are both None"),
        ({"identity": bytes(15)}, "Config.identity=" + repr(bytes(15)) + " must be 16 bytes"),
        ({"identity": "0" * 16}, "must be 16 bytes"),
    ],
)
def test_addresses_and_identity(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**kwargs)


def test_one_address_family_may_be_switched_off() -> None:
    assert Config(bind_v4=None).bind_v6 == "::"
    assert Config(bind_v6=None, bind_v4="127.0.0.1").bind_v4 == "127.0.0.1"
    assert Config(bind_v6="::1").bind_v6 == "::1"


# --- dataclass behaviour -----------------------------------------------------------------------


def test_frozen_keyword_only_and_revalidated_on_replace() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 3000  # type: ignore[misc]
    with pytest.raises(TypeError):
        Config(2998)  # type: ignore[call-arg]
    changed = dataclasses.replace(config, port=3000)
    assert (changed.port, config.port) == (3000, 2998)
    with pytest.raises(ValueError, match=r"Config\.port=1024"):
        dataclasses.replace(config, port=1024)
    assert Config() == Config()
    assert hash(Config()) == hash(Config())


# --- derived values ---------------------------------------------------------------------------


def test_derived_values_of_the_defaults() -> None:
    config = Config()
    assert config.effective_reuse_time == 30.0
    assert config.connect_timeout == 10.0
    assert config.noop_threshold == 22.5
    assert config.effective_slots == 1
    assert config.effective_buffer_size == 64 * 1024
    assert config.effective_handshake_timeout == 10.0


@pytest.mark.parametrize(
    ("timeout", "reuse_time", "reuse", "connect"),
    [(0.1, 0.5, 0.5, 0.2), (5, 30, 30, 10), (20, 30, 60, 40), (30, 30, 90, 60), (1200, 0, 3600, 60)],
)
def test_reuse_and_connect_timeout(timeout: float, reuse_time: float, reuse: float, connect: float) -> None:
    config = Config(timeout=timeout, reuse_time=reuse_time)
    assert config.effective_reuse_time == pytest.approx(reuse)
    assert config.connect_timeout == pytest.approx(connect)
    assert config.noop_threshold == pytest.approx(0.75 * reuse)
    assert config.effective_handshake_timeout == pytest.approx(connect)


@pytest.mark.parametrize(
    ("synchronous", "max_slots", "slots"),
    [(True, 0, 1), (True, 32, 1), (False, 0, 16), (False, 1, 1), (False, 2, 2), (False, 32, 32)],
)
def test_effective_slots(synchronous: bool, max_slots: int, slots: int) -> None:
    assert Config(synchronous=synchronous, max_slots=max_slots).effective_slots == slots


def test_effective_buffer_size() -> None:
    assert Config(buffer_size=1024).effective_buffer_size == 1024
    assert Config(buffer_size=0).effective_buffer_size == 65536


# --- docs/config.md ------------------------------------------------------------------------------

DOC = ROOT / "docs" / "config.md"


def _table_rows(section: str) -> dict[str, list[str]]:
    """Rows of the first table under ``## section``, keyed by the backquoted first cell."""
    text = DOC.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in body.splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|$", line)
        if match:
            rows[match[1]] = [cell.strip() for cell in match[2].split("|")]
    return rows


def test_docs_table_lists_every_field_with_its_default_and_origin() -> None:
    rows = _table_rows("Fields")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(rows) == set(fields)
    for name, (default, allowed, origin, meaning) in rows.items():
        value = fields[name].default
        if not isinstance(value, bytes):
            assert default == f"`{value}`", name
        assert allowed, name
        assert meaning, name
        assert origin.startswith(("libchirp `", "ours")), name
    ours_only = {name for name, row in rows.items() if row[2] == "ours"}
    assert ours_only == {
        "send_queue_size",
        "handshake_timeout",
        "header_map",
        "max_connections",
        "max_handshakes",
        "max_unreleased",
        "max_unreleased_bytes",
        "verify_peer",
    }
    for name, row in rows.items():
        if row[2].startswith("libchirp"):
            assert f"`{name.upper()}`" in row[2]


def test_docs_table_lists_every_derived_value() -> None:
    properties = {name for name, value in vars(Config).items() if isinstance(value, property)}
    assert set(_table_rows("Derived values")) == properties
