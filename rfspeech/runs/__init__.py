"""Runs: the orchestration layer between the console scripts (:mod:`rfspeech.bin`) and the libraries.

One module per console script that does more than one library call: it turns the script's config into
models, trainers, searches and files (``train``: config → models, structure, :class:`Trainer`; ``search``:
the RF-Next search pipeline; ``train_tts``: the acoustic model's builder; ``synthesize``, ``gta``: the task
bodies). Libraries (``rf``, ``layers``, ``models``, ``data``, ``search``, ``train``, ``inference``,
``evaluate``) never import it; ``rfspeech.bin`` parses arguments and calls one function here.
"""
