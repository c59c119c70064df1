"""rfspeech benchmarks: performance claims measured side by side, as ratios, in one run.

``python -m bench [--quick] [--out bench/results/NAME.json]`` runs every section and writes a JSON
and a Markdown table beside it; see ``BENCHMARKS.md`` for the latest full table and the method
(:mod:`bench.common`). Sections:

* :mod:`bench.search_overhead`: a whole training step, plain vs rfspeech searchable vs naive loop;
* :mod:`bench.parity`: searched (``single``, ``merge``) vs hand-designed inference time;
* :mod:`bench.synthesis`: × real time, plain eager with weight norm vs rfspeech's inference path;
* :mod:`bench.features`: ``rfspeech-prepare`` features vs a per-file librosa loop;
* :mod:`bench.training`: training samples/s and peak memory, plain vs search;
* :mod:`bench.streaming`: ONNX Runtime vs torch eager, chunked vs full (time, peak memory), streaming latency.
"""

SECTIONS = ("search_overhead", "parity", "synthesis", "features", "training", "streaming")
