"""``rtdstream bench``: the whole pipeline under a chosen load, measured against the machine's raw limits.

One module per concern: :mod:`~rtdstream.bench.options` (what to run),
:mod:`~rtdstream.bench.pipeline` (the real processes), :mod:`~rtdstream.bench.clients`
(Socket.IO clients that time and check every reading), :mod:`~rtdstream.bench.probes`
(one sample a second of rates, lag, CPU and memory), :mod:`~rtdstream.bench.limits`
(plain aiokafka and executemany on the same data), :mod:`~rtdstream.bench.report`
and :mod:`~rtdstream.bench.chart` (table, JSON, PNG), and :mod:`~rtdstream.bench.runner`
which runs a plain, ramp or soak benchmark from start to clean stop.
"""
