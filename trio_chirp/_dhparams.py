"""RFC 7919 ffdhe2048, the DH parameters a node uses for TLS 1.2's DHE suites by default.

Public constants (RFC 7919 appendix A.1), written as PKCS #3 ``DH PARAMETERS`` PEM without
any dependency. The package ships the result as ``ffdhe2048.pem`` (``FFDHE2048_PEM``);
``tests/test_pki.py`` checks that the file is what ``ffdhe2048_pem()`` writes, that the
prime is the RFC's formula, and that ``ssl`` loads it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Final

__all__ = ["FFDHE2048_G", "FFDHE2048_P", "FFDHE2048_PEM", "ffdhe2048_pem"]

FFDHE2048_PEM: Final = Path(__file__).with_name("ffdhe2048.pem")
"""The shipped PEM file: the default of ``Config.dh_params_pem``; ``make-pki`` copies it."""

FFDHE2048_P: Final = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B423861285C97FFFFFFFFFFFFFFFF",
    16,
)
"""p = 2^2048 - 2^1984 + (floor(2^1918 * e) + 560316) * 2^64 - 1."""

FFDHE2048_G: Final = 2


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 byte keeps it positive
    return b"\x02" + _der_length(len(body)) + body


def ffdhe2048_pem() -> bytes:
    """PEM ``DH PARAMETERS``: DER ``SEQUENCE { INTEGER p, INTEGER g }``, base64 in 64-column lines."""
    body = _der_integer(FFDHE2048_P) + _der_integer(FFDHE2048_G)
    der = b"\x30" + _der_length(len(body)) + body
    text = base64.b64encode(der)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN DH PARAMETERS-----\n" + b"\n".join(lines) + b"\n-----END DH PARAMETERS-----\n"


if __name__ == "__main__":  # regenerate the shipped file: python -m trio_chirp._dhparams
    FFDHE2048_PEM.write_bytes(ffdhe2048_pem())
    print(FFDHE2048_PEM)
