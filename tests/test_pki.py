"""make-pki and the shipped DH parameters: the files, their contents, the command."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trio_chirp import TLSContexts
from trio_chirp._cli import main
from trio_chirp._dhparams import FFDHE2048_G, FFDHE2048_P, ffdhe2048_pem
from trio_chirp.pki import FFDHE2048_PEM, CertificateAuthority, make_pki

ROOT = Path(__file__).resolve().parents[1]


def _floor_e_times_2_to(bits: int) -> int:
    """floor(e * 2**bits), from the series sum 1/k! in integers with 64 guard bits."""
    scale = 1 << (bits + 64)
    term, total, k = scale, 0, 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> 64


def test_the_ffdhe2048_prime_is_rfc_7919s_formula() -> None:
    expected = 2**2048 - 2**1984 + (_floor_e_times_2_to(1918) + 560316) * 2**64 - 1
    assert expected == FFDHE2048_P
    assert FFDHE2048_G == 2


def test_the_shipped_dh_file_is_the_encoding_and_ssl_loads_it() -> None:
    assert FFDHE2048_PEM.read_bytes() == ffdhe2048_pem()
    assert FFDHE2048_PEM.read_bytes().startswith(
        b"-----BEGIN DH PARAMETERS-----\nMIIBCAKCAQEA//////////+t+FRY"
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_dh_params(str(FFDHE2048_PEM))  # raises if OpenSSL cannot read it


def test_the_dh_file_is_package_data() -> None:
    assert '"ffdhe2048.pem"' in (ROOT / "pyproject.toml").read_text()


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_make_pki_writes_a_ca_node_chains_and_dh_params(tmp_path: Path) -> None:
    files = make_pki(tmp_path / "pki", ["alpha", "beta"], ip_addresses=["127.0.0.2"])
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "alpha.pem",
        "beta.pem",
        "ca.key",
        "ca.pem",
        "dh.pem",
    ]
    assert files.dh_params.read_bytes() == ffdhe2048_pem()
    [ca] = _certs(files.ca_cert)
    for name, path in files.nodes.items():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        leaf, ca_copy = _certs(path)
        assert ca_copy == ca
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert leaf.issuer == ca.subject
        assert isinstance(leaf.public_key(), rsa.RSAPublicKey)  # DHE-RSA: libchirp's TLS 1.2 suites
        assert leaf.public_key().key_size == 2048
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.2"]
        assert b"PRIVATE KEY-----" in path.read_bytes()
        TLSContexts.from_files(path, files.dh_params)  # usable as Config.cert_chain_pem
    assert stat.S_IMODE(os.stat(files.ca_key).st_mode) == 0o600


def test_make_pki_reuses_its_ca_and_never_overwrites_a_node(tmp_path: Path) -> None:
    first = make_pki(tmp_path, ["alpha"])
    ca_before = first.ca_cert.read_bytes()
    second = make_pki(tmp_path, ["gamma"])
    assert second.ca_cert.read_bytes() == ca_before
    assert _certs(second.nodes["gamma"])[0].issuer == _certs(first.ca_cert)[0].subject
    alpha = first.nodes["alpha"].read_bytes()
    with pytest.raises(FileExistsError, match=r"alpha\.pem exists"):
        make_pki(tmp_path, ["alpha"])
    assert first.nodes["alpha"].read_bytes() == alpha
    with pytest.raises(ValueError, match="must be a plain file name"):
        make_pki(tmp_path, ["../evil"])
    with pytest.raises(ValueError, match="node names repeat"):
        make_pki(tmp_path, ["x", "x"])


def test_a_ca_in_memory_issues_chains_in_libchirps_layout() -> None:
    ca = CertificateAuthority.create("unit CA")
    chain = ca.issue("unit")
    blocks = [line for line in chain.decode().splitlines() if line.startswith("-----BEGIN")]
    assert blocks == [
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN RSA PRIVATE KEY-----",
    ]
    assert chain.count(ca.cert_pem) == 1


def test_the_command_makes_a_pki(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-pki", str(tmp_path), "alpha", "beta", "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert f'Config(cert_chain_pem="{tmp_path / "alpha.pem"}", dh_params_pem="{tmp_path / "dh.pem"}")' in out
    assert f'CERT_CHAIN_PEM="{tmp_path / "alpha.pem"}"' in out
    leaf = _certs(tmp_path / "beta.pem")[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30
    assert main(["make-pki", str(tmp_path), "alpha"]) == 1
    assert "alpha.pem exists" in capsys.readouterr().err


def test_python_dash_m_trio_chirp_make_pki(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "trio_chirp", "make-pki", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "node.pem").is_file()
    assert "node node:" in proc.stdout


def test_the_console_script_is_declared() -> None:
    assert 'trio-chirp = "trio_chirp._cli:main"' in (ROOT / "pyproject.toml").read_text()
