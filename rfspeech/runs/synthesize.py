"""The ``rfspeech-synthesize`` run: mel → wav with a vocoder, or text → mel → wav with an acoustic model in front.

:func:`run` checks the vocoding options (chunking, backend, streaming) before anything is loaded, loads the
checkpoints (:mod:`rfspeech.inference.loading`), synthesizes (:mod:`rfspeech.inference.synthesis`,
:mod:`rfspeech.inference.tts`; chunked, ONNX Runtime or streamed) and writes the wavs, ``speed.json`` (last:
its presence marks a finished synthesis) and, in text mode, the duration error of :mod:`rfspeech.evaluate.tts`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

from rfspeech.config import require
from rfspeech.data.ids import utt_path
from rfspeech.errors import ConfigError, DataError, RFSpeechError
from rfspeech.evaluate import tts
from rfspeech.inference import (
    checkpoint_config,
    collect_inputs,
    load_acoustic,
    load_checkpoint,
    load_generator,
    model_info,
    resolve_device,
    synthesize,
)
from rfspeech.inference.chunked import check_chunk_frames
from rfspeech.inference.export import check_backend, onnx_backend, search_form
from rfspeech.inference.speed import latency_fields
from rfspeech.inference.tts import (
    check_feature_match,
    read_text_file,
    synthesize_text,
    text_id,
    text_to_mels,
    texts_of_split,
)
from rfspeech.io import atomic_path, atomic_write_text, save_npy, write_file

log = logging.getLogger("rfspeech.synthesize")


def _load_vocoder(ckpt: Path, device: Any) -> tuple[Any, Any]:
    generator, params = load_generator(ckpt, device=device)
    if int(generator.in_channels) != params.n_mels or int(generator.hop_length) != params.hop_length:
        raise ConfigError(f"{ckpt}: generator ({generator.in_channels} mels, hop {generator.hop_length}) does not fit "
                          f"its own feature parameters ({params.n_mels} mels, hop {params.hop_length})")
    return generator, params


def _wav_writer(out_dir: Path, sr: int) -> Any:
    def write(utt_id: str, wav: np.ndarray) -> None:
        buf = io.BytesIO()
        sf.write(buf, np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
        with atomic_path(utt_path(out_dir, utt_id, ".wav")) as tmp:
            write_file(tmp, buf.getvalue())  # a full disk: OSError naming the file, not libsndfile's "System error."

    return write


def _check_common(cfg: Any) -> Any:
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    _check_vocoding(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    return resolve_device(str(cfg.device))


def _check_vocoding(cfg: Any) -> tuple[int | None, str]:
    """``chunk_frames`` and ``backend`` checked before anything is loaded or written."""
    chunk = cfg.get("chunk_frames")
    chunk = None if chunk is None else check_chunk_frames(chunk)
    onnx = cfg.get("onnx")
    backend = check_backend(cfg.get("backend") or "torch", export=not onnx)
    if onnx and backend != "onnxruntime":
        raise ConfigError(f"onnx={onnx} is run by ONNX Runtime: pass backend=onnxruntime")
    if backend == "onnxruntime" and resolve_device(str(cfg.device)).type != "cpu":
        raise ConfigError(f"backend=onnxruntime runs on the CPU: pass device=cpu (got device={cfg.device})")
    if cfg.get("stream"):
        if not cfg.get("acoustic_checkpoint") or not cfg.get("checkpoint"):
            raise ConfigError("stream=true streams text -> mel -> wav: pass acoustic_checkpoint=TTS and checkpoint=VOC")
        if chunk is None:
            raise ConfigError("stream=true needs chunk_frames=N (frames per vocoder call)")
        if cfg.get("stream_block_frames") is not None:
            check_chunk_frames(cfg.stream_block_frames)
    return chunk, backend


@contextlib.contextmanager
def _backend(generator: Any, ckpt: Path, cfg: Any) -> Iterator[Any]:
    """The generator synthesis runs: the torch module, or it (or ``onnx=``) through ONNX Runtime.

    The caller has refused a checkpoint still in search mode (:func:`_refuse_search_mode`) before writing anything.
    """
    _, backend = _check_vocoding(cfg)
    if backend == "torch":
        yield generator
        return
    with onnx_backend(generator, onnx_path=cfg.get("onnx"), threads=cfg.get("threads")) as gen:
        yield gen


def _refuse_search_mode(ckpt: Path, cfg: Any) -> None:
    """backend=onnxruntime exporting a checkpoint still in search mode: a clear error, before anything is written."""
    if cfg.get("backend") != "onnxruntime" or cfg.get("onnx"):
        return
    why = search_form(load_checkpoint(ckpt, map_location="cpu"))
    if why:
        raise ConfigError(f"{ckpt}: backend=onnxruntime needs a finalized generator, this one is still in search "
                          f"mode ({why}): export it with rfspeech-export finalize=true and pass onnx=FILE")


def _context(generator: Any) -> Any:
    """The generator's look-ahead context, or None (with a warning) when the walker cannot analyse it."""
    from rfspeech.inference.chunked import resolve_context

    try:
        return resolve_context(generator)
    except RFSpeechError as e:
        log.warning("look-ahead not recorded in speed.json: %s", e)
        return None


def _latency(speed: dict[str, Any], ctx: Any, cfg: Any, sr: int, hop: int, first: float | None,
             first_frames: int | None) -> None:
    chunk, backend = _check_vocoding(cfg)
    speed.update(backend=backend, **latency_fields(ctx, sample_rate=sr, hop_length=hop, chunk_frames=chunk,
                                                   first_compute_seconds=first, first_frames=first_frames))
    if cfg.get("onnx"):
        speed["onnx"] = str(Path(cfg.onnx).resolve())


def run(cfg: Any) -> dict[str, Any]:
    """The run behind ``rfspeech-synthesize`` (``cfg``: the composed ``recipes/synthesize.yaml``)."""
    if cfg.get("acoustic_checkpoint"):
        return tts_task(cfg)
    for key in ("text", "text_file", "duration_eval_dir"):
        if cfg.get(key):
            raise ConfigError(f"{key}= needs an acoustic model: pass acoustic_checkpoint=PATH")
    require(cfg, "checkpoint", "input_dir", "out_dir")
    device = _check_common(cfg)
    ckpt = Path(cfg.checkpoint)
    generator, params = _load_vocoder(ckpt, device)
    _refuse_search_mode(ckpt, cfg)
    from rfspeech.inference.foreign import synthesis_features

    wav_params, own_stats = synthesis_features(ckpt, params, cfg.get("peak_normalize"))
    inputs = collect_inputs(cfg.input_dir, params, model_name=str(ckpt), feats_yaml=cfg.get("feats_yaml"),
                            stats=cfg.get("stats") or own_stats, check_features=bool(cfg.check_features),
                            max_utts=cfg.get("max_utts"), wav_params=wav_params, mel_layout=cfg.get("mel_layout"))
    for utt, why in inputs.bad:
        log.warning("skipped %s: %s", utt, why)
    if not inputs.mels:
        raise DataError(f"{cfg.input_dir}: no usable input ({len(inputs.bad)} bad: {inputs.bad[0][1]})"
                        if inputs.bad else f"{cfg.input_dir}: no input")
    out_dir = Path(cfg.out_dir)
    sr = int(params.sample_rate)
    write = _wav_writer(out_dir, sr)
    chunk, _ = _check_vocoding(cfg)
    with _backend(generator, ckpt, cfg) as gen:
        ctx = _context(gen)
        if chunk is not None and ctx is None:
            raise ConfigError(f"chunk_frames={chunk}: the look-ahead of {ckpt} cannot be analysed (see the warning); "
                              "synthesize whole utterances (chunk_frames=null)")
        out_dir.mkdir(parents=True, exist_ok=True)
        result = synthesize(gen, inputs.mels, sample_rate=sr, batch_size=int(cfg.batch_size), device=device,
                            warmup=bool(cfg.warmup), prepare=True, seed=cfg.get("seed"), progress=bool(cfg.progress),
                            on_done=lambda i, w: write(inputs.utt_ids[i], w), chunk_frames=chunk, context=ctx)
    speed = result.speed.to_dict()
    first = speed.pop("first_chunk_seconds", None) if chunk is not None else speed.get("first_batch_seconds")
    _latency(speed, ctx, cfg, sr, int(params.hop_length), first, speed.get("first_batch_frames"))
    speed.update(checkpoint=str(ckpt.resolve()), input_dir=str(Path(cfg.input_dir).resolve()), input_kind=inputs.kind,
                 feats_yaml=inputs.feats_yaml, n_bad=len(inputs.bad), model=model_info(generator))
    if inputs.bad:
        atomic_write_text(out_dir / "bad_files.txt", "".join(f"{u}\t{why}\n" for u, why in inputs.bad))
    # speed.json last: its presence marks a finished synthesis.
    atomic_write_text(out_dir / "speed.json", json.dumps(speed, indent=2) + "\n")
    print(f"synthesized {len(result.wavs)} utterances ({speed['audio_seconds']:.1f} s of audio) into {out_dir}: "
          f"{speed['x_real_time']:.2f}x real time (RTF {speed['rtf']:.4f}) on {speed['device']} "
          f"with {speed['threads']} threads" + (f"; {len(inputs.bad)} bad inputs skipped" if inputs.bad else ""))
    print(_latency_line(speed))
    return speed


def _latency_line(speed: dict[str, Any]) -> str:
    mode = f"chunks of {speed['chunk_frames']} frames" if speed.get("chunk_frames") else "whole utterances"
    text = f"{speed['backend']} backend, {mode}: first audio after {speed['first_audio_ms']:.1f} ms"
    text += (f" ({speed['first_audio_algorithmic_ms']:.1f} ms algorithmic + "
             f"{speed['first_audio_compute_ms']:.1f} ms compute)")
    if speed.get("lookahead_frames") is not None:
        text += (f"; look-ahead {speed['lookahead_frames']} frames ({speed['lookahead_ms']:.1f} ms), "
                 f"history {speed['history_frames']} frames ({speed['history_ms']:.1f} ms)")
    return text


# --------------------------------------------------------------------------- text mode


def _text_items(cfg: Any) -> tuple[list[tuple[str, str]], str]:
    """``(utt_id, text)`` pairs and the input kind from exactly one of ``text``, ``text_file``, ``input_dir``."""
    given = [k for k in ("text", "text_file", "input_dir") if cfg.get(k) not in (None, "")]
    if len(given) != 1:
        raise ConfigError("text mode (acoustic_checkpoint=...) takes exactly one of text=, text_file= or "
                          f"input_dir= (a prepared split); got {', '.join(given) if given else 'none'}")
    kind = given[0]
    if kind == "text":
        value = cfg.text
        texts = [str(t) for t in OmegaConf.to_container(value)] if OmegaConf.is_list(value) else [str(value)]
        items = [(text_id(i), t) for i, t in enumerate(texts)]
    elif kind == "text_file":
        items = read_text_file(cfg.text_file)
    else:
        items = texts_of_split(cfg.input_dir)
        kind = "manifest"
    if cfg.get("max_utts") is not None:
        items = items[: int(cfg.max_utts)]
    return items, kind


def tts_task(cfg: Any) -> dict[str, Any]:
    """Text mode: acoustic model (+ vocoder) over sentences, and optionally the duration error."""
    device = _check_common(cfg)
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") not in (None, "") else None
    dur_dir = Path(cfg.duration_eval_dir) if cfg.get("duration_eval_dir") else None
    if out_dir is None and dur_dir is None:
        raise ConfigError("out_dir is required (pass out_dir=...; out_dir=null only with duration_eval_dir=...)")
    try:
        length_scale = float(cfg.length_scale)
    except (TypeError, ValueError):
        raise ConfigError(f"length_scale must be a positive number, got {cfg.length_scale!r}") from None
    if not (length_scale > 0 and length_scale < float("inf")):
        raise ConfigError(f"length_scale must be a positive number, got {cfg.length_scale!r}")
    items, kind = _text_items(cfg)
    if dur_dir is not None and kind != "manifest":
        raise ConfigError("duration_eval_dir= needs reference features: pass input_dir=<prepared split> "
                          "(utts.tsv + feats/), not text= or text_file=")
    a_path = Path(cfg.acoustic_checkpoint)
    acoustic, a_params = load_acoustic(a_path, device=device)
    vocoder = v_path = None
    feature_check = None
    if cfg.get("checkpoint") and out_dir is not None:
        v_path = Path(cfg.checkpoint)
        vocoder, v_params = _load_vocoder(v_path, device)
        _refuse_search_mode(v_path, cfg)
        # Before any work: a vocoder fed mels of other parameters makes noise without complaint.
        feature_check = check_feature_match(
            a_params, v_params, acoustic_name=str(a_path), vocoder_name=str(v_path),
            acoustic_config=checkpoint_config(a_path), vocoder_config=checkpoint_config(v_path))
    summary: dict[str, Any] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        common = dict(acoustic_checkpoint=str(a_path.resolve()), input_kind=kind, length_scale=length_scale,
                      model=model_info(acoustic), feature_params=a_params.to_dict())
        if kind == "manifest":
            common["input_dir"] = str(Path(cfg.input_dir).resolve())
        if vocoder is not None and cfg.get("stream"):
            summary, bad, n_done = _stream(cfg, acoustic, vocoder, v_path, v_params, items, out_dir, device,
                                           length_scale)
            summary.update(common, checkpoint=str(v_path.resolve()), vocoder_model=model_info(vocoder),
                           feature_check=feature_check)
            what = "utterances (streamed)"
        elif vocoder is not None:
            sr = int(v_params.sample_rate)
            chunk, _ = _check_vocoding(cfg)
            with _backend(vocoder, v_path, cfg) as gen:
                ctx = _context(gen)
                if chunk is not None and ctx is None:
                    raise ConfigError(f"chunk_frames={chunk}: the look-ahead of {v_path} cannot be analysed")
                res = synthesize_text(acoustic, gen, items, sample_rate=sr, length_scale=length_scale,
                                          batch_size=int(cfg.batch_size), device=device, warmup=bool(cfg.warmup),
                                          seed=cfg.get("seed"), progress=bool(cfg.progress),
                                          on_done=_wav_writer(out_dir, sr), chunk_frames=chunk, context=ctx)
            bad, n_done = res.bad, len(res.wavs)
            summary = res.speed.to_dict()
            vs = res.vocoder_speed.to_dict()
            first = vs.get("first_chunk_seconds") if chunk is not None else vs.get("first_batch_seconds")
            _latency(summary, ctx, cfg, sr, int(v_params.hop_length), first, vs.get("first_batch_frames"))
            summary.update(common, checkpoint=str(v_path.resolve()), vocoder_model=model_info(vocoder),
                           feature_check=feature_check, acoustic=res.acoustic_speed.to_dict(), vocoder=vs)
            what = "utterances"
        else:
            res_m = text_to_mels(acoustic, items, sample_rate=a_params.sample_rate, hop_length=a_params.hop_length,
                                     length_scale=length_scale, device=device, warmup=bool(cfg.warmup),
                                     progress=bool(cfg.progress))
            if not res_m.mels:
                raise DataError(f"nothing to synthesize: {len(res_m.bad)} text(s) unusable ({res_m.bad[0][1]})")
            for utt_id, mel in zip(res_m.utt_ids, res_m.mels):
                with atomic_path(utt_path(out_dir, utt_id, ".npy")) as tmp:
                    save_npy(tmp, mel)
            a_params.save(out_dir / "feats.yaml")  # so rfspeech-synthesize checkpoint=VOC input_dir=out_dir checks them
            bad, n_done = res_m.bad, len(res_m.mels)
            summary = res_m.speed.to_dict()
            summary.update(common, checkpoint=None)
            what = "mels (no vocoder: checkpoint=null)"
        summary["n_bad"] = len(bad)
        for u, why in bad:
            log.warning("skipped %s: %s", u, why)
        if bad:
            atomic_write_text(out_dir / "bad_files.txt", "".join(f"{u}\t{why}\n" for u, why in bad))
        atomic_write_text(out_dir / "texts.tsv", "".join(f"{u}\t{t}\n" for u, t in items))
        # speed.json last: its presence marks a finished synthesis.
        atomic_write_text(out_dir / "speed.json", json.dumps(summary, indent=2) + "\n")
        print(f"synthesized {n_done} {what} from text ({summary['audio_seconds']:.1f} s of audio) into {out_dir}: "
              f"{summary['x_real_time']:.2f}x real time end to end on {summary['device']} with "
              f"{summary['threads']} threads" + (f"; {len(bad)} texts skipped" if bad else ""))
        if summary.get("backend"):
            print(_latency_line(summary))
    if dur_dir is not None:
        rows = tts.duration_errors(acoustic, cfg.input_dir, feature_params=a_params, device=device,
                                   max_utts=cfg.get("max_utts"), progress=bool(cfg.progress))
        dsum = tts.write_duration_eval(dur_dir, rows, {"acoustic_checkpoint": str(a_path.resolve()),
                                                       "input_dir": str(Path(cfg.input_dir).resolve())})
        merged = tts.merge_eval_columns(dur_dir, rows)
        m = dsum["metrics"]
        print(f"duration error on {dsum['n_evaluated']} utterances: "
              f"{_mean(m['duration_mae_frames'])} frames/token (MAE vs MAS), length error "
              f"{_mean(m['length_error'])}, mel L1 after DTW {_mean(m['mel_dtw_l1'])}; {dur_dir / 'eval_duration.json'}"
              + (f" (columns added to {dur_dir / 'metrics.csv'})" if merged else ""))
        summary["duration_eval"] = dsum
    return summary


class _StreamWriter:
    """One wav per utterance written block by block as audio becomes final; renamed into place at its end."""

    def __init__(self, out_dir: Path, sr: int) -> None:
        self.out_dir, self.sr = out_dir, sr
        self._open: tuple[str, Any, Any] | None = None  # (utt_id, atomic_path context, SoundFile)

    def write(self, utt_id: str, block: np.ndarray) -> None:
        if self._open is None:
            cm = atomic_path(utt_path(self.out_dir, utt_id, ".wav"))
            tmp = cm.__enter__()
            self._open = (utt_id, cm, sf.SoundFile(str(tmp), "w", self.sr, 1, "PCM_16", format="WAV"))
        self._open[2].write(np.clip(block, -1.0, 1.0))
        self._open[2].flush()  # final audio reaches the file now, not at the end of the utterance

    def end(self, utt_id: str) -> None:
        if self._open is not None:
            _, cm, f = self._open
            self._open = None
            f.close()
            cm.__exit__(None, None, None)

    def abort(self) -> None:
        if self._open is not None:
            _, cm, f = self._open
            self._open = None
            f.close()
            cm.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temp file


def _stream(cfg: Any, acoustic: Any, vocoder: Any, v_path: Path, v_params: Any, items: list[tuple[str, str]],
            out_dir: Path, device: Any, length_scale: float) -> tuple[dict[str, Any], list[tuple[str, str]], int]:
    """Text -> mel -> streamed wav (stream=true): audio written as soon as it is final."""
    from rfspeech.inference.speed import prepare_for_inference
    from rfspeech.inference.tts import stream_text

    chunk, _ = _check_vocoding(cfg)
    sr = int(v_params.sample_rate)
    prepare_for_inference(vocoder)
    vocoder.to(device).eval()
    writer = _StreamWriter(out_dir, sr)
    with _backend(vocoder, v_path, cfg) as gen:
        ctx = _context(gen)
        if ctx is None:
            raise ConfigError(f"stream=true: the look-ahead of {v_path} cannot be analysed")
        try:
            res = stream_text(acoustic, gen, items, sample_rate=sr, chunk_frames=int(chunk),
                              block_frames=cfg.get("stream_block_frames"), length_scale=length_scale, device=device,
                              warmup=bool(cfg.warmup), seed=cfg.get("seed"), context=ctx,
                              progress=bool(cfg.progress), on_audio=writer.write, on_end=writer.end)
        except BaseException:
            writer.abort()
            raise
    summary = res.speed.to_dict()
    _latency(summary, ctx, cfg, sr, int(v_params.hop_length), res.first_audio_seconds, None)
    # the first audio waits for the acoustic model too: its compute is inside first_audio_compute_ms
    summary["first_chunk_compute_ms"] = round(1000.0 * res.first_chunk_seconds, 3)
    return summary, res.bad, len(res.utt_ids)


def _mean(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f}" + (f" ± {s['ci95']:.3f}" if s.get("ci95") is not None else "")
