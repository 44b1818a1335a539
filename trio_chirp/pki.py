"""Certificates for chirp nodes: ``make_pki`` (behind ``trio-chirp make-pki DIR``) and a CA API.

Needs the ``cryptography`` package: ``pip install 'trio-chirp[pki]'``. See docs/tls.md.

    from trio_chirp.pki import CertificateAuthority, make_pki

    files = make_pki("pki", ["alpha", "beta"])      # ca.pem, ca.key, dh.pem, alpha.pem, beta.pem
    Config(cert_chain_pem=files.nodes["alpha"], dh_params_pem=files.dh_params)

    ca = CertificateAuthority.create()              # in memory, e.g. for tests
    chain_pem = ca.issue("alpha")                   # node cert + CA cert + node key, one PEM
"""

from ._dhparams import FFDHE2048_PEM as FFDHE2048_PEM
from ._pki import CertificateAuthority as CertificateAuthority
from ._pki import PKIFiles as PKIFiles
from ._pki import make_pki as make_pki

__all__ = ["FFDHE2048_PEM", "CertificateAuthority", "PKIFiles", "make_pki"]

for _public in (CertificateAuthority, PKIFiles, make_pki):
    _public.__module__ = __name__
del _public
