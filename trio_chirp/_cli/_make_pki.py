"""``trio-chirp make-pki DIR [NODE ...] [--days N] [--ip ADDRESS ...]``.

Writes a CA and node certificates for TLS between chirp nodes (docs/tls.md); behaviour and
output unchanged since the command line had this command only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import Formatter

EXAMPLES = """examples:
  trio-chirp make-pki pki alpha beta          # pki/ca.pem, ca.key, dh.pem, alpha.pem, beta.pem
  trio-chirp make-pki pki gamma --days 90     # adds a node; the CA in pki/ is reused
  trio-chirp echo --cert-chain pki/alpha.pem  # then use a node's file

"""


EXIT_CODES = """exit codes:
  0    done
  1    cannot write the files
  2    bad arguments, or no 'cryptography' package"""


def add_parser(commands: Any) -> None:
    pki = commands.add_parser(
        "make-pki",
        help="create a CA and node certificates for TLS (RSA keys, RFC 7919 DH parameters)",
        description=(
            "Create DIR/ca.pem, DIR/ca.key, DIR/dh.pem and one DIR/NODE.pem per node (certificate,"
            " CA certificate and key in one file: Config.cert_chain_pem, libchirp's CERT_CHAIN_PEM)."
            " An existing CA in DIR is reused, so running it again adds nodes. Needs the"
            " 'cryptography' package (pip install 'trio-chirp[pki]')."
        ),
        epilog=EXAMPLES + EXIT_CODES,
        formatter_class=Formatter,
    )
    pki.add_argument("directory", metavar="DIR")
    pki.add_argument("nodes", metavar="NODE", nargs="*", default=["node"], help="node names (default: node)")
    pki.add_argument("--days", type=int, default=825, help="node certificate validity (default: 825)")
    pki.add_argument(
        "--ip",
        dest="ip_addresses",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an IP address to name in the node certificates (chirp checks none; other tools may)",
    )
    pki.set_defaults(run=make_pki_command)


def make_pki_command(args: argparse.Namespace) -> int:
    try:
        from trio_chirp.pki import make_pki
    except ImportError as exc:
        print(f"trio-chirp make-pki: {exc}", file=sys.stderr)
        return 2
    if args.days < 1:
        print("trio-chirp make-pki: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        files = make_pki(args.directory, args.nodes, days=args.days, ip_addresses=args.ip_addresses)
    except (OSError, ValueError) as exc:
        print(f"trio-chirp make-pki: {exc}", file=sys.stderr)
        return 1
    print(f"CA certificate:  {files.ca_cert}")
    print(f"CA key:          {files.ca_key}  (keep it off the nodes; needed only to add nodes)")
    print(f"DH parameters:   {files.dh_params}  (RFC 7919 ffdhe2048)")
    for name, path in files.nodes.items():
        print(f"node {name + ':':<11}{path}")
    first = next(iter(files.nodes.values()))
    print()
    print(f'trio_chirp: Config(cert_chain_pem="{first}", dh_params_pem="{files.dh_params}")')
    print(f'libchirp:   CERT_CHAIN_PEM="{first}", DH_PARAMS_PEM="{files.dh_params}"')
    return 0
