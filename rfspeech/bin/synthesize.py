"""``rfspeech-synthesize``: mel → wav with a vocoder, or text → mel → wav with an acoustic model in front.

Vocoder (copy-synthesis, cached mels)::

    rfspeech-synthesize checkpoint=CKPT input_dir=DIR out_dir=DIR [device=cpu batch_size=1]

Text to speech (``acoustic_checkpoint=`` switches to text mode; the two models' feature parameters
must match, see :mod:`rfspeech.inference.tts`)::

    rfspeech-synthesize acoustic_checkpoint=TTS checkpoint=VOC text="Hello, world." out_dir=DIR
    rfspeech-synthesize acoustic_checkpoint=TTS checkpoint=VOC text_file=sentences.txt out_dir=DIR
    rfspeech-synthesize acoustic_checkpoint=TTS checkpoint=VOC input_dir=data/eval out_dir=DIR
    rfspeech-synthesize acoustic_checkpoint=TTS text_file=F out_dir=DIR          # mels only (*.npy + feats.yaml)
    rfspeech-synthesize acoustic_checkpoint=TTS input_dir=data/eval duration_eval_dir=exp/x/eval out_dir=null

``text=`` is taken verbatim (commas, quotes and brackets need no Hydra quoting).

Chunked, ONNX Runtime and streaming (the same files; ``speed.json`` gains first-audio latency and
the look-ahead, see :func:`rfspeech.inference.speed.latency_fields`)::

    rfspeech-synthesize checkpoint=CKPT input_dir=DIR out_dir=DIR chunk_frames=16           # exact chunked
    rfspeech-synthesize checkpoint=CKPT input_dir=DIR out_dir=DIR backend=onnxruntime [onnx=G.onnx]
    rfspeech-synthesize acoustic_checkpoint=TTS checkpoint=VOC text_file=F out_dir=DIR stream=true chunk_frames=8
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runs.synthesize import SynthesizeRun, run


def task(cfg: Any) -> dict[str, Any]:
    return run(SynthesizeRun.from_config(cfg))


def quote_text_override(arg: str) -> str:
    """Quote a ``text=`` override for Hydra so any sentence passes verbatim.

    Hydra's override grammar reads ``a,b`` as a sweep and chokes on quotes, brackets and colons; a
    single-quoted value takes everything (``\\'`` for a quote, backslashes before a quote doubled),
    and ``${`` is escaped so OmegaConf leaves it alone. Already quoted values and lists
    (``text=[...]``) pass unchanged.
    """
    key, sep, value = arg.partition("=")
    if not sep or key.lstrip("+~") != "text" or not value:
        return arg
    if (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"") or value.startswith("["):
        return arg
    v = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    v = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, v)
    v = v.replace("${", "\\${")
    return f"{key}='{v}'"


_entry = hydra_main("synthesize")(task)


def main() -> Any:
    sys.argv = [sys.argv[0], *(quote_text_override(a) for a in sys.argv[1:])]
    return _entry()


if __name__ == "__main__":
    main()
