"""The node: a facade (``Chirp``) over services with one job each, and its lifecycle.

See docs/architecture.md for the layers, what each module owns and the rule for upward
calls.
"""

from ._chirp import Chirp, NodeServices, node_services
from ._lifecycle import open_chirp, serve_chirp

__all__ = ["Chirp", "NodeServices", "node_services", "open_chirp", "serve_chirp"]
