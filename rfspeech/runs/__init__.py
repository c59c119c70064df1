"""Runs: the orchestration layer between the console scripts (:mod:`rfspeech.bin`) and the libraries.

One module per console script with work to orchestrate: it turns the script's composed config and its typed
form into models, trainers, searches and files. ``train`` (config → models, structure, :class:`Trainer`),
``search`` (the RF-Next search pipeline: strategy, global search, local search), ``train_tts`` (the acoustic
model's builder), ``synthesize`` (its :class:`SynthesizeRun` and the synthesis task), ``gta``, ``rf`` and
``export``. Libraries (``rf``, ``layers``, ``models``, ``data``, ``search``, ``train``, ``inference``,
``evaluate``) never import it; :mod:`rfspeech.bin` parses arguments, builds the typed config and calls one
function here.
"""
