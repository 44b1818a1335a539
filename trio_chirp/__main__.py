"""``python -m trio_chirp COMMAND ...``: the ``trio-chirp`` command (docs/cli.md)."""

import sys

from ._cli import main

sys.exit(main())
