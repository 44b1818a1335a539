"""``trio-chirp``: every command as a real subprocess on loopback, its output and exit code checked."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import ROOT, Done, Server, cli
from tls_helpers import PKISet

import trio_chirp

pytestmark = pytest.mark.timeout(60)

COMMANDS = ["echo", "listen", "router", "send", "request", "make-pki"]


def _one_error_line(done: Done, command: str) -> str:
    """The failure was one line on stderr, naming the command; no traceback."""
    assert "Traceback" not in done.err, done.err
    lines = done.err.splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith(f"trio-chirp {command}"), lines
    return lines[0]


def test_no_arguments_lists_the_commands() -> None:
    done = cli()
    assert done.returncode == 0, done.err
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", done.out, re.MULTILINE), (command, done.out)


def test_version() -> None:
    done = cli("--version")
    assert (done.returncode, done.out) == (0, f"trio-chirp {trio_chirp.__version__}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples_and_exit_codes(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0, done.err
    assert "examples:" in done.out
    assert f"trio-chirp {command}" in done.out.split("examples:")[1]
    assert re.search(r"exit\s+codes:", done.out, re.IGNORECASE), done.out


@pytest.fixture
def echo() -> Iterator[Server]:
    with Server("echo", "--port", "0") as server:
        yield server


def test_request_prints_the_echo_and_the_worker_sees_the_deadline(echo: Server) -> None:
    done = cli("request", echo.address, "hello wörld", "--timeout", "3")
    assert (done.returncode, done.out, done.err) == (0, "hello wörld\n", "")
    line = echo.readline()
    found = re.fullmatch(
        r"answered from 127\.0\.0\.1:\d+, serial \d+, 12 bytes, ACK requested,"
        r" deadline in (\d\.\d{3}) s: hello wörld\n",
        line,
    )
    assert found, line
    assert 2.0 < float(found[1]) < 3.0  # the request's --timeout 3, less the time to get there


def test_send_prints_the_outcome_reading_standard_input(echo: Server) -> None:
    done = cli("send", f"localhost:{echo.port}", "-", stdin="from stdin")  # a host name, resolved
    assert done.returncode == 0, done.err
    localhost = socket.getaddrinfo("localhost", echo.port, type=socket.SOCK_STREAM)[0][4][0]
    shown = f"[{localhost}]" if ":" in localhost else localhost  # the resolver's first answer
    assert re.fullmatch(
        rf"acknowledged: 10 bytes to {re.escape(shown)}:{echo.port} \(serial \d+\) in [\d.]+ ms\n", done.out
    ), done.out
    assert echo.readline().endswith(": from stdin\n")


def test_echo_count_stops_after_that_many_answers() -> None:
    with Server("echo", "--port", "0", "--count", "2", "--quiet") as server:
        for text in ("one", "two"):
            assert cli("request", server.address, text).out == f"{text}\n"
        done = server.wait()
    assert (done.returncode, done.out, done.err) == (0, "", "")


def test_listen_prints_each_message_decoded_then_releases_it() -> None:
    with Server("listen", "--port", "0", "--count", "2") as listen:
        sent = cli("send", listen.address, "plain", "--timeout", "2")
        assert sent.returncode == 0, sent.err
        routed = cli("send", f"[::1]:{listen.port}", "for a router", "--destination", "10.0.0.7:2998")
        assert routed.returncode == 0, routed.err
        done = listen.wait()
    assert done.returncode == 0, done.err
    first, second = done.out.splitlines()
    plain = re.fullmatch(
        r"from 127\.0\.0\.1:\d+, serial \d+, 5 bytes, ACK requested, deadline in (\d\.\d{3}) s: plain", first
    )
    assert plain, first
    assert 1.0 < float(plain[1]) < 2.0  # --timeout 2 travelled
    routed_line = re.fullmatch(
        r"from \[::1\]:\d+, serial \d+, 12 bytes, ACK requested, deadline in (\d\.\d{3}) s,"
        r" destination 10\.0\.0\.7:2998: for a router",
        second,
    )
    assert routed_line, second
    assert 4.0 < float(routed_line[1]) < 5.0  # the default --timeout 5


def test_router_forwards_by_destination_and_an_error_comes_back(echo: Server) -> None:
    with Server("router", "--port", "0") as router:
        done = cli("request", router.address, "routed", "--destination", echo.address)
        assert (done.returncode, done.out) == (0, "routed\n"), done.err
        assert router.readline().endswith(f"destination {echo.address}: routed -> {echo.address}\n")
        assert echo.readline().endswith(": routed\n")
        lost = cli("request", router.address, "nowhere")
        assert lost.returncode == 1
        assert "error response from router" in _one_error_line(lost, "request")
        stopped, _ = router.interrupt()
    assert re.search(r"router: 1 forwarded, 1 responses returned, failed \{'no route': 1\}", stopped.err), (
        stopped.err
    )


def test_router_with_a_fixed_next_hop(echo: Server) -> None:
    with Server("router", "--port", "0", "--to", f"localhost:{echo.port}") as router:
        done = cli("request", router.address, "fixed")
        assert (done.returncode, done.out) == (0, "fixed\n"), done.err
        assert re.search(rf": fixed -> (127\.0\.0\.1|\[::1\]):{echo.port}\n$", router.readline())


def test_tls_between_two_commands(pki: PKISet) -> None:
    tls = ["--bind-v6", "none", "--cert-chain"]
    with Server(
        "listen", "--port", "0", "--count", "1", "--bind-v4", "127.0.0.2", *tls, str(pki["alpha"])
    ) as listen:
        sent = cli(
            "send", f"127.0.0.2:{listen.port}", "secret", "--bind-v4", "127.0.0.3", *tls, str(pki["beta"])
        )
        assert sent.returncode == 0, sent.err
        done = listen.wait()
    assert re.search(r"^from 127\.0\.0\.3:\d+, .*: secret$", done.out, re.MULTILINE), done.out


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["send", "nowhere", "x"], 2, "is not HOST:PORT"),
        (["send", "::1:2998", "x"], 2, "in brackets"),
        (["request", "127.0.0.1:70000", "x"], 2, "is not HOST:PORT"),
        (["send", "no-such-host.invalid:2998", "x"], 2, "cannot resolve host 'no-such-host.invalid'"),
        (["echo", "--port", "80"], 2, "Config.port=80 is out of range"),
        (["listen", "--timeout", "0"], 2, "seconds must be more than 0"),
        (["send", "127.0.0.1:2998", "x", "--cert-chain", "/no/such.pem"], 2, "/no/such.pem"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], code: int, says: str) -> None:
    done = cli(*args)
    assert done.returncode == code, done.err
    assert says in _one_error_line(done, args[0])


def test_a_refused_connection_exits_3() -> None:
    with socket.socket() as bound:  # bound, not listening: connecting to it is refused
        bound.bind(("127.0.0.1", 0))
        done = cli("send", f"127.0.0.1:{bound.getsockname()[1]}", "x")
    assert done.returncode == 3
    assert "Connection refused" in _one_error_line(done, "send")


@pytest.mark.parametrize("command", ["echo", "listen", "router"])
def test_a_port_in_use_exits_4(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(command, "--port", str(port))
    assert done.returncode == 4
    expected = (
        f"cannot listen on 0.0.0.0:{port}: another process or node listens there (Address already in use)"
    )
    assert expected in _one_error_line(done, command)


def test_no_answer_within_the_timeout_exits_5() -> None:
    with socket.socket() as silent:  # accepts (the kernel does) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        done = cli("request", f"127.0.0.1:{silent.getsockname()[1]}", "x", "--timeout", "0.5")
    assert done.returncode == 5
    assert "within --timeout 0.5 s" in _one_error_line(done, "request")


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
@pytest.mark.parametrize("command", ["echo", "listen", "router"])
def test_ctrl_c_stops_a_listening_command_at_once(command: str) -> None:
    with Server(command, "--port", "0") as server:
        done, took = server.interrupt()
    assert done.returncode == 130
    assert f"trio-chirp {command}: stopped (Ctrl-C)" in done.err
    assert "Traceback" not in done.err, done.err
    assert took < 1.0, took


def test_make_pki_still_writes_its_files(tmp_path: Path) -> None:
    done = cli("make-pki", str(tmp_path / "pki"), "alpha")
    assert done.returncode == 0, done.err
    assert (tmp_path / "pki" / "alpha.pem").exists()
    assert f'Config(cert_chain_pem="{tmp_path / "pki" / "alpha.pem"}"' in done.out


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_ctrl_c_stops_a_waiting_request_at_once() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(20)
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trio_chirp",
                "request",
                f"127.0.0.1:{silent.getsockname()[1]}",
                "x",
                "--timeout=60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as child:
            connection, _ = silent.accept()  # the request is waiting for the handshake now
            with connection:
                sent = time.monotonic()
                child.send_signal(signal.SIGINT)
                _, err = child.communicate(timeout=10)
                took = time.monotonic() - sent
    assert child.returncode == 130
    assert err == "trio-chirp request: stopped (Ctrl-C)\n"
    assert took < 1.0, took


def test_a_reader_that_stops_reading_ends_listen_quietly() -> None:
    with Server("listen", "--port", "0") as listen:
        assert listen.proc.stdout is not None
        listen.proc.stdout.close()  # as `trio-chirp listen | head -1` does after its line
        cli("send", listen.address, "into a closed pipe", "--timeout", "2")  # its outcome is not the point
        assert listen.proc.stderr is not None
        with listen.proc.stderr:
            err = listen.proc.stderr.read()  # until the listener exits
        listen.proc.wait(timeout=10)
    assert listen.proc.returncode == 0
    assert "Traceback" not in err, err
