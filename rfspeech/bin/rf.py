"""``rfspeech-rf``: receptive-field table, JSON and plot of a model config from ``recipes/model/``.

Usage::

    rfspeech-rf model=hifigan_v1 segment=32 out_dir=exp/rf/hifigan_v1 [probe=true]
    rfspeech-rf model=acoustic submodule=decoder units=frames segment=200 out_dir=exp/rf/acoustic_decoder
    rfspeech-rf model=my_pwg 'inputs={z:[1,1,1024],c:[1,80,8]}' segment=32 out_dir=exp/rf/my_pwg
    rfspeech-rf model=hifigan_v1 structure=exp/search/structure.yaml sample_rate=24000 out_dir=exp/rf/searched
    rfspeech-rf model=hifigan_debug segment=16 refine=true out_dir=exp/refined      # -> exp/refined/structure.yaml
    rfspeech-rf model=hifigan_debug random_like=exp/search/structure.yaml random_seed=1 out_dir=exp/random_s1

``segment`` is counted in units of ``segment_input`` (default: the model's mel input, i.e. the first
input the output runs faster than, e.g. ``c`` of a ParallelWaveGAN ``forward(z, c)``; else the first
argument); the summary says which. ``inputs`` gives a multi-input model's example inputs
(name → shape, time axis last) when ``forward`` has arguments without defaults.

Prints the per-layer table and a summary, writes ``out_dir/rf.json`` (the full
:class:`rfspeech.rf.RFReport`, plus the model config and the probe when asked) and
``out_dir/rf.png`` (field growth through the layers, segment drawn in). For a vocoder the summary
also gives the look-ahead, history and chunk overlap in frames and ms (``sample_rate``: the
checkpoint's, else 22050 Hz), in ``rf.json["lookahead"]`` under the keys the compare report reads. A model
with learned-spacing layers (a ``dcls`` structure) also lists each one's tap offsets, in ``rf.json["taps"]``.

Control arms of a search study (:mod:`rfspeech.runs.controls`), each written as ``out_dir/structure.yaml`` for
``rfspeech-train structure=``: ``refine=true`` applies the receptive-field refinement hint (the analysed
model's dilations changed so that ``I_min`` falls below ``segment``; unchanged when it already does);
``random_like=<searched structure.yaml>`` moves the analysed model's dilations at random by as much as that
search moved them (``random_seed``, ``random_mode``).
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runs.rf import run


def task(cfg: Any) -> dict[str, Any]:
    return run(cfg)


main = hydra_main("rf")(task)

if __name__ == "__main__":
    main()
