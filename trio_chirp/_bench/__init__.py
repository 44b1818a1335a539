"""The benchmark harness behind ``trio-chirp bench`` and ``bench/bench_node.py`` (one harness).

``_workloads`` (what runs), ``_child`` (the receiver and sender processes), ``_orchestrate``
(starting them, sampling CPU), ``_table`` (bench_node.py's command line and report),
``_command`` (``trio-chirp bench``: the standard set, live progress, JSON and chart),
``_reference`` (the same workloads against libchirp and pyzmq, in their own interpreter).
Private: not part of the library's API; the JSON it writes is the stable part.
"""
