#!/usr/bin/env python3
"""End-to-end node throughput and memory over loopback TCP, two processes per workload.

    .venv/bin/python bench/bench_node.py                      # every workload (the table in bench/README.md)
    .venv/bin/python bench/bench_node.py --quick              # 1 s runs and 200 idle connections: a smoke run
    .venv/bin/python bench/bench_node.py async-1k echo-1k     # some workloads only
    .venv/bin/python bench/bench_node.py --profile DIR ...    # also py-spy both processes while measuring
    .venv/bin/python bench/bench_node.py --tls async-1k ...   # the same over TLS (127.0.0.3 -> 127.0.0.2)

The harness lives in the package (``trio_chirp/_bench/``, shared with ``trio-chirp bench``);
this script is its command line, with the output it always had.

Shape of a throughput workload: this process only orchestrates. It starts a *receiver*
process (one node, one task doing ``receive()`` + ``release()``) and a *sender* process (one
node, one task doing ``await chirp.send(msg)`` in a loop, reusing one ``Message``). The
measuring process counts messages; after a warm-up (``--warmup`` seconds and at least
``WARMUP_MSGS`` messages) it measures for ``--duration`` seconds and reports the rate.
While it measures, the orchestrator samples both processes' CPU time (``/proc/PID/stat``)
so the table shows which side is the bottleneck (a process at ~100 % is saturated).

* ``async-*``: both nodes asynchronous (16 receive slots); counted at the receiver.
* ``sync-1k``: both nodes synchronous: every ``send()`` returns on its ACK; one slot.
* ``echo-1k``: request/response. The sender node is synchronous: it sends (returns on the
  ACK), then awaits the reply. The receiver node is asynchronous: its worker sets
  ``msg.data`` on the received message, sends the same object back, then releases it.
  Round trips are counted at the sender.
* ``idle-1000``: one asynchronous receiver node; ``--connections`` sender nodes, 100 per
  process, each sends one asynchronous message to it and then idles. The receiver's VmRSS
  before (node started) and after (all messages released, ``gc.collect()``) divided by the
  number of connections is the cost of one idle connection (user space only: kernel socket
  buffers are not in RSS). With ``--profile`` the receiver also runs ``tracemalloc`` and
  reports the Python allocations per connection by source line.

Every node listens on 127.0.0.1 only and has ``reuse_time=3600`` so nothing is collected.
With ``--tls`` the receiver listens on 127.0.0.2 and senders dial it from 127.0.0.3 (only
127.0.0.1 and ::1 are plaintext), with certificates from ``trio_chirp.pki.make_pki`` in a
temporary directory (RSA 2048, TLS 1.3 negotiated); the raw baselines stay plaintext.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pyspy_summary import summarize  # noqa: E402

from trio_chirp._bench._table import add_arguments, apply_defaults, orchestrate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args()
    apply_defaults(args)
    orchestrate(args, summarize)


if __name__ == "__main__":
    main()
