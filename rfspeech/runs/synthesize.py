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
from dataclasses import dataclass, replace
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
from rfspeech.inference.synthesis import SynthesisSettings
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


@dataclass(frozen=True)
class SynthesizeRun:
    """``rfspeech-synthesize``'s config, checked once at the edge (:meth:`from_config`) and read by every step.

    Attributes:
        checkpoint: vocoder checkpoint (None in text mode without a vocoder: mels only).
        acoustic_checkpoint: acoustic model (text mode) or None (vocoder mode).
        input_dir: mels / wavs / a prepared split (vocoder mode), or a prepared split of texts (text mode).
        out_dir: where the wavs (or mels) and ``speed.json`` go (None: duration evaluation only).
        text: sentences given as ``text=`` (text mode).
        text_file: a file of sentences (text mode).
        duration_eval_dir: where the acoustic model's duration error goes (text mode), or None.
        synthesis: batch, resolved device, warm-up, seed, progress and ``chunk_frames``.
        backend: ``torch`` or ``onnxruntime``.
        onnx: an exported ONNX file run by ONNX Runtime, or None (export on the fly).
        threads: torch / ONNX Runtime threads (None: leave the default).
        stream: stream text -> mel -> wav (with ``chunk_frames``).
        stream_block_frames: mel frames pushed at a time when streaming (None: ``chunk_frames``).
        length_scale: speaking-rate factor of the acoustic model.
        max_utts: at most this many inputs.
        feats_yaml, stats, check_features, peak_normalize, mel_layout: how vocoder-mode inputs are read
            (:func:`rfspeech.inference.synthesis.collect_inputs`).
    """

    checkpoint: Path | None
    acoustic_checkpoint: Path | None
    input_dir: str | None
    out_dir: Path | None
    text: tuple[str, ...] | None
    text_file: str | None
    duration_eval_dir: Path | None
    synthesis: SynthesisSettings
    backend: str
    onnx: str | None
    threads: int | None
    stream: bool
    stream_block_frames: int | None
    length_scale: float
    max_utts: int | None
    feats_yaml: str | None
    stats: str | None
    check_features: bool
    peak_normalize: bool | None
    mel_layout: str | None

    @classmethod
    def from_config(cls, cfg: Any) -> SynthesizeRun:
        """Check the composed ``recipes/synthesize.yaml`` before anything is loaded or written.

        Raises:
            ConfigError: a missing or contradicting key, ``chunk_frames`` / ``backend`` / ``stream`` settings
                that cannot work, a bad ``length_scale``.
        """
        text_mode = bool(cfg.get("acoustic_checkpoint"))
        if not text_mode:
            for key in ("text", "text_file", "duration_eval_dir"):
                if cfg.get(key):
                    raise ConfigError(f"{key}= needs an acoustic model: pass acoustic_checkpoint=PATH")
            require(cfg, "checkpoint", "input_dir", "out_dir")
        if int(cfg.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
        chunk = cfg.get("chunk_frames")
        chunk = None if chunk is None else check_chunk_frames(chunk)
        onnx = cfg.get("onnx")
        backend = check_backend(cfg.get("backend") or "torch", export=not onnx)
        if onnx and backend != "onnxruntime":
            raise ConfigError(f"onnx={onnx} is run by ONNX Runtime: pass backend=onnxruntime")
        device = resolve_device(str(cfg.device))
        if backend == "onnxruntime" and device.type != "cpu":
            raise ConfigError(f"backend=onnxruntime runs on the CPU: pass device=cpu (got device={cfg.device})")
        block = None
        if cfg.get("stream"):
            if not cfg.get("acoustic_checkpoint") or not cfg.get("checkpoint"):
                raise ConfigError("stream=true streams text -> mel -> wav: pass acoustic_checkpoint=TTS and "
                                  "checkpoint=VOC")
            if chunk is None:
                raise ConfigError("stream=true needs chunk_frames=N (frames per vocoder call)")
            if cfg.get("stream_block_frames") is not None:
                block = check_chunk_frames(cfg.stream_block_frames)
        out_dir = Path(cfg.out_dir) if cfg.get("out_dir") not in (None, "") else None
        dur_dir = Path(cfg.duration_eval_dir) if cfg.get("duration_eval_dir") else None
        length_scale = 1.0
        if text_mode:
            if out_dir is None and dur_dir is None:
                raise ConfigError("out_dir is required (pass out_dir=...; out_dir=null only with "
                                  "duration_eval_dir=...)")
            try:
                length_scale = float(cfg.length_scale)
            except (TypeError, ValueError):
                raise ConfigError(f"length_scale must be a positive number, got {cfg.length_scale!r}") from None
            if not (length_scale > 0 and length_scale < float("inf")):
                raise ConfigError(f"length_scale must be a positive number, got {cfg.length_scale!r}")
        text = cfg.get("text")
        if text not in (None, ""):
            text = tuple(str(t) for t in OmegaConf.to_container(text)) if OmegaConf.is_list(text) else (str(text),)
        return cls(
            checkpoint=Path(cfg.checkpoint) if cfg.get("checkpoint") else None,
            acoustic_checkpoint=Path(cfg.acoustic_checkpoint) if text_mode else None,
            input_dir=str(cfg.input_dir) if cfg.get("input_dir") not in (None, "") else None,
            out_dir=out_dir, text=text or None, text_file=cfg.get("text_file") or None, duration_eval_dir=dur_dir,
            synthesis=SynthesisSettings(batch_size=int(cfg.batch_size), device=device, warmup=bool(cfg.warmup),
                                        seed=cfg.get("seed"), progress=bool(cfg.progress), chunk_frames=chunk),
            backend=backend, onnx=onnx or None, threads=cfg.get("threads"), stream=bool(cfg.get("stream")),
            stream_block_frames=block, length_scale=length_scale, max_utts=cfg.get("max_utts"),
            feats_yaml=cfg.get("feats_yaml"), stats=cfg.get("stats"), check_features=bool(cfg.check_features),
            peak_normalize=cfg.get("peak_normalize"), mel_layout=cfg.get("mel_layout"))

    @property
    def device(self) -> torch.device:
        return torch.device(self.synthesis.device)


@contextlib.contextmanager
def _backend(generator: Any, run: SynthesizeRun) -> Iterator[Any]:
    """The generator synthesis runs: the torch module, or it (or ``onnx=``) through ONNX Runtime.

    The caller has refused a checkpoint still in search mode (:func:`_refuse_search_mode`) before writing anything.
    """
    if run.backend == "torch":
        yield generator
        return
    with onnx_backend(generator, onnx_path=run.onnx, threads=run.threads) as gen:
        yield gen


def _refuse_search_mode(ckpt: Path, run: SynthesizeRun) -> None:
    """backend=onnxruntime exporting a checkpoint still in search mode: a clear error, before anything is written."""
    if run.backend != "onnxruntime" or run.onnx:
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


def _latency(speed: dict[str, Any], ctx: Any, run: SynthesizeRun, sr: int, hop: int, first: float | None,
             first_frames: int | None) -> None:
    speed.update(backend=run.backend, **latency_fields(ctx, sample_rate=sr, hop_length=hop,
                                                       chunk_frames=run.synthesis.chunk_frames,
                                                       first_compute_seconds=first, first_frames=first_frames))
    if run.onnx:
        speed["onnx"] = str(Path(run.onnx).resolve())


def run(run: SynthesizeRun) -> dict[str, Any]:
    """The run behind ``rfspeech-synthesize`` (``run``: its config, checked, :meth:`SynthesizeRun.from_config`)."""
    if run.threads:
        torch.set_num_threads(int(run.threads))
    if run.acoustic_checkpoint is not None:
        return tts_task(run)
    device = run.device
    ckpt = run.checkpoint
    assert ckpt is not None and run.input_dir is not None and run.out_dir is not None  # from_config requires them
    generator, params = _load_vocoder(ckpt, device)
    _refuse_search_mode(ckpt, run)
    from rfspeech.inference.foreign import synthesis_features

    wav_params, own_stats = synthesis_features(ckpt, params, run.peak_normalize)
    inputs = collect_inputs(run.input_dir, params, model_name=str(ckpt), feats_yaml=run.feats_yaml,
                            stats=run.stats or own_stats, check_features=run.check_features,
                            max_utts=run.max_utts, wav_params=wav_params, mel_layout=run.mel_layout)
    for utt, why in inputs.bad:
        log.warning("skipped %s: %s", utt, why)
    if not inputs.mels:
        raise DataError(f"{run.input_dir}: no usable input ({len(inputs.bad)} bad: {inputs.bad[0][1]})"
                        if inputs.bad else f"{run.input_dir}: no input")
    out_dir = run.out_dir
    sr = int(params.sample_rate)
    write = _wav_writer(out_dir, sr)
    chunk = run.synthesis.chunk_frames
    with _backend(generator, run) as gen:
        ctx = _context(gen)
        if chunk is not None and ctx is None:
            raise ConfigError(f"chunk_frames={chunk}: the look-ahead of {ckpt} cannot be analysed (see the warning); "
                              "synthesize whole utterances (chunk_frames=null)")
        out_dir.mkdir(parents=True, exist_ok=True)
        result = synthesize(gen, inputs.mels, replace(run.synthesis, context=ctx), sample_rate=sr,
                            on_done=lambda i, w: write(inputs.utt_ids[i], w))
    speed = result.speed.to_dict()
    first = speed.pop("first_chunk_seconds", None) if chunk is not None else speed.get("first_batch_seconds")
    _latency(speed, ctx, run, sr, int(params.hop_length), first, speed.get("first_batch_frames"))
    speed.update(checkpoint=str(ckpt.resolve()), input_dir=str(Path(run.input_dir).resolve()), input_kind=inputs.kind,
                 feats_yaml=inputs.feats_yaml, n_bad=len(inputs.bad), model=model_info(generator),
                 # audio input at another rate than the vocoder's: {rate: files} (null when none was resampled)
                 resampled_from={str(k): v for k, v in inputs.resampled_from.items()} or None)
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


def _text_items(run: SynthesizeRun) -> tuple[list[tuple[str, str]], str]:
    """``(utt_id, text)`` pairs and the input kind from exactly one of ``text``, ``text_file``, ``input_dir``."""
    given = [k for k in ("text", "text_file", "input_dir") if getattr(run, k) is not None]
    if len(given) != 1:
        raise ConfigError("text mode (acoustic_checkpoint=...) takes exactly one of text=, text_file= or "
                          f"input_dir= (a prepared split); got {', '.join(given) if given else 'none'}")
    kind = given[0]
    if kind == "text":
        items = [(text_id(i), t) for i, t in enumerate(run.text or ())]
    elif kind == "text_file":
        items = read_text_file(run.text_file)
    else:
        items = texts_of_split(run.input_dir)
        kind = "manifest"
    if run.max_utts is not None:
        items = items[: int(run.max_utts)]
    return items, kind


def tts_task(run: SynthesizeRun) -> dict[str, Any]:
    """Text mode: acoustic model (+ vocoder) over sentences, and optionally the duration error."""
    device = run.device
    out_dir, dur_dir, length_scale = run.out_dir, run.duration_eval_dir, run.length_scale
    items, kind = _text_items(run)
    if dur_dir is not None and kind != "manifest":
        raise ConfigError("duration_eval_dir= needs reference features: pass input_dir=<prepared split> "
                          "(utts.tsv + feats/), not text= or text_file=")
    a_path = run.acoustic_checkpoint
    assert a_path is not None
    acoustic, a_params = load_acoustic(a_path, device=device)
    vocoder = v_path = None
    feature_check = None
    if run.checkpoint is not None and out_dir is not None:
        v_path = run.checkpoint
        vocoder, v_params = _load_vocoder(v_path, device)
        _refuse_search_mode(v_path, run)
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
            common["input_dir"] = str(Path(run.input_dir).resolve())
        if vocoder is not None and run.stream:
            summary, bad, n_done = _stream(run, acoustic, vocoder, v_path, v_params, items)
            summary.update(common, checkpoint=str(v_path.resolve()), vocoder_model=model_info(vocoder),
                           feature_check=feature_check)
            what = "utterances (streamed)"
        elif vocoder is not None:
            sr = int(v_params.sample_rate)
            chunk = run.synthesis.chunk_frames
            with _backend(vocoder, run) as gen:
                ctx = _context(gen)
                if chunk is not None and ctx is None:
                    raise ConfigError(f"chunk_frames={chunk}: the look-ahead of {v_path} cannot be analysed")
                res = synthesize_text(acoustic, gen, items, replace(run.synthesis, context=ctx), sample_rate=sr,
                                      length_scale=length_scale, on_done=_wav_writer(out_dir, sr))
            bad, n_done = res.bad, len(res.wavs)
            summary = res.speed.to_dict()
            vs = res.vocoder_speed.to_dict()
            first = vs.get("first_chunk_seconds") if chunk is not None else vs.get("first_batch_seconds")
            _latency(summary, ctx, run, sr, int(v_params.hop_length), first, vs.get("first_batch_frames"))
            summary.update(common, checkpoint=str(v_path.resolve()), vocoder_model=model_info(vocoder),
                           feature_check=feature_check, acoustic=res.acoustic_speed.to_dict(), vocoder=vs)
            what = "utterances"
        else:
            res_m = text_to_mels(acoustic, items, sample_rate=a_params.sample_rate, hop_length=a_params.hop_length,
                                     length_scale=length_scale, device=device, warmup=run.synthesis.warmup,
                                     progress=run.synthesis.progress)
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
        rows = tts.duration_errors(acoustic, run.input_dir, feature_params=a_params, device=device,
                                   max_utts=run.max_utts, progress=run.synthesis.progress)
        dsum = tts.write_duration_eval(dur_dir, rows, {"acoustic_checkpoint": str(a_path.resolve()),
                                                       "input_dir": str(Path(run.input_dir).resolve())})
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


def _stream(run: SynthesizeRun, acoustic: Any, vocoder: Any, v_path: Path, v_params: Any,
            items: list[tuple[str, str]]) -> tuple[dict[str, Any], list[tuple[str, str]], int]:
    """Text -> mel -> streamed wav (stream=true): audio written as soon as it is final."""
    from rfspeech.inference.speed import prepare_for_inference
    from rfspeech.inference.tts import stream_text

    assert run.out_dir is not None  # streaming writes wavs
    sr = int(v_params.sample_rate)
    prepare_for_inference(vocoder)
    vocoder.to(run.device).eval()
    writer = _StreamWriter(run.out_dir, sr)
    with _backend(vocoder, run) as gen:
        ctx = _context(gen)
        if ctx is None:
            raise ConfigError(f"stream=true: the look-ahead of {v_path} cannot be analysed")
        try:
            res = stream_text(acoustic, gen, items, replace(run.synthesis, context=ctx), sample_rate=sr,
                              block_frames=run.stream_block_frames, length_scale=run.length_scale,
                              on_audio=writer.write, on_end=writer.end)
        except BaseException:
            writer.abort()
            raise
    summary = res.speed.to_dict()
    _latency(summary, ctx, run, sr, int(v_params.hop_length), res.first_audio_seconds, None)
    # the first audio waits for the acoustic model too: its compute is inside first_audio_compute_ms
    summary["first_chunk_compute_ms"] = round(1000.0 * res.first_chunk_seconds, 3)
    return summary, res.bad, len(res.utt_ids)


def _mean(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f}" + (f" ± {s['ci95']:.3f}" if s.get("ci95") is not None else "")
