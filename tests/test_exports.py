"""The public surface: every exported name resolves, nothing private leaks, classes are final."""

from __future__ import annotations

import typing

import trio_chirp
import trio_chirp.pki
import trio_chirp.testing

PUBLIC = {
    "CannotConnectError",
    "Chirp",
    "ChirpError",
    "ChirpTimeoutError",
    "Config",
    "ConnectionLostError",
    "Handler",
    "Message",
    "MessageInUseError",
    "MessageTooLargeError",
    "NodeStats",
    "PeerCertificate",
    "ProtocolError",
    "RemoteError",
    "RemoteStats",
    "Route",
    "Router",
    "RouterStats",
    "ShutdownError",
    "TLSContexts",
    "TLSError",
    "Transport",
    "WorkerStats",
    "Workers",
    "open_chirp",
    "serve_chirp",
    "testing",  # the subpackage, once imported
    "pki",  # the certificate module (needs the pki extra), once imported
}


def test_public_names_are_exactly_the_documented_ones() -> None:
    names = {name for name in dir(trio_chirp) if not name.startswith("_")}
    assert names == PUBLIC


def test_public_classes_are_final_where_subclassing_makes_no_sense() -> None:
    for cls in (
        trio_chirp.Chirp,
        trio_chirp.Config,
        trio_chirp.Message,
        trio_chirp.NodeStats,
        trio_chirp.PeerCertificate,
        trio_chirp.TLSContexts,
        trio_chirp.pki.CertificateAuthority,
        trio_chirp.pki.PKIFiles,
        trio_chirp.Router,
        trio_chirp.RouterStats,
        trio_chirp.Workers,
        trio_chirp.WorkerStats,
    ):
        assert getattr(cls, "__final__", False), cls


def test_testing_exports() -> None:
    expected = {"MemoryNetwork", "MemoryNodes", "MemoryStream", "MemoryTransport", "StreamStats"}
    expected.add("open_nodes")
    assert set(trio_chirp.testing.__all__) == expected
    assert issubclass(trio_chirp.testing.MemoryTransport, trio_chirp.Transport)


def test_pki_exports() -> None:
    assert set(trio_chirp.pki.__all__) == {"FFDHE2048_PEM", "CertificateAuthority", "PKIFiles", "make_pki"}
    assert trio_chirp.pki.make_pki.__module__ == "trio_chirp.pki"
    assert trio_chirp.pki.FFDHE2048_PEM.is_file()


def test_package_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("trio_chirp").joinpath("py.typed").is_file()
    assert typing.get_type_hints(trio_chirp.Chirp.send)["return"] is type(None)
