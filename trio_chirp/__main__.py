"""``python -m trio_chirp make-pki DIR``: the ``trio-chirp`` command."""

import sys

from ._cli import main

sys.exit(main())
