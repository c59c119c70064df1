"""rfspeech benchmarks: performance claims measured side by side, as ratios, in one run.

``python -m bench --all`` runs every section with the protocol of :mod:`bench.common` and
regenerates the tables of ``BENCHMARKS.md``; ``python -m bench --quick --out FILE.json`` is the
CI-sized subset. Sections:

* :mod:`bench.search_overhead`: a whole training step, plain vs rfspeech searchable vs naive loop;
* :mod:`bench.parity`: searched (``single``, ``merge``) vs hand-designed inference time;
* :mod:`bench.synthesis`: × real time, plain eager with weight norm vs rfspeech's inference path;
* :mod:`bench.features`: ``rfspeech-prepare`` features vs a per-file librosa loop;
* :mod:`bench.training`: training samples/s and peak memory, plain vs search;
* :mod:`bench.streaming`: ONNX Runtime vs torch eager, chunked vs full (time, peak memory), streaming latency;
* :mod:`bench.paths`: the synthesis path chosen by length (crossovers per family, V1 at 60 s: time, memory);
* :mod:`bench.precision`: bf16 synthesis (opt-in) vs fp32 on the same path, and its cost on real speech;
* :mod:`bench.limits`: FLOPs per audio second, achieved GFLOP/s per path against a same-run yardstick.
"""

#: Sections of a plain ``python -m bench`` / ``--quick`` run.
SECTIONS = ("search_overhead", "parity", "synthesis", "features", "training", "streaming", "paths", "precision",
            "limits")
#: Sections of ``python -m bench --all`` (every table of BENCHMARKS.md).
ALL_SECTIONS = SECTIONS
