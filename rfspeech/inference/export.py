"""ONNX export of a finalized generator and an ONNX Runtime backend that synthesis (chunked too) can use.

:func:`export_onnx` writes a generator with weight norm folded and a dynamic length axis; the
look-ahead :class:`~rfspeech.rf.lookahead.Context`, the hop and the mel bins go into the file's
metadata, so :class:`OnnxRuntimeGenerator` chunks and streams exactly like the torch model
without the torch module. A model still in search mode (multi-branch wrappers) is refused unless
``finalize=True`` folds it (:func:`rfspeech.search.finalize`: frozen ``multiple`` wrappers are
merged exactly; wrappers still searching become plain convs at their searched dilation).

ONNX and ONNX Runtime are the optional extra ``rfspeech[onnx]``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.errors import ConfigError, RFSpeechError
from rfspeech.io import atomic_path
from rfspeech.rf.lookahead import Context, context_from_dict

__all__ = ["BACKENDS", "LazyOnnxRuntime", "OnnxRuntimeGenerator", "check_backend", "check_finalized", "export_onnx",
           "forward_inputs", "onnx_available", "onnx_backend", "search_form"]

METADATA_KEY = "rfspeech"
BACKENDS = ("torch", "onnxruntime", "auto")
ONNX_EXTRA = "pip install 'rfspeech[onnx]'"


def check_backend(backend: Any, *, export: bool = True) -> str:
    """A synthesis backend name, checked: ``torch``, ``onnxruntime`` (whose packages must be importable) or ``auto``
    (ONNX Runtime for long utterances when it is installed, :func:`rfspeech.inference.paths.choose_path`).

    Args:
        backend: the ``backend=`` value.
        export: the ONNX file is still to be written (needs ``onnx`` besides ``onnxruntime``).

    Raises:
        ConfigError: an unknown backend, or ``onnxruntime`` without the packages (one line naming the extra).
    """
    name = str(backend)
    if name not in BACKENDS:
        raise ConfigError(f"backend={name}: unknown backend (choose one of {', '.join(BACKENDS)})")
    if name == "onnxruntime":
        missing = [m for m in ("onnxruntime", "onnx")[: 2 if export else 1] if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"backend=onnxruntime needs {' and '.join(missing)}: {ONNX_EXTRA}")
    return name


def onnx_available(export: bool = True) -> bool:
    """Whether ONNX Runtime (and, to export, onnx) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx")[: 2 if export else 1])


def search_form(state: dict[str, Any]) -> str | None:
    """Why a checkpoint's generator is multi-branch (not finalized), or None for a finalized one.

    Args:
        state: a training/search checkpoint as :func:`rfspeech.inference.load_checkpoint` returns it.
    """
    if state.get("structure") and (state.get("structure_mode") or "single") == "multiple":
        return "trained in structure mode 'multiple' (multi-branch convs)"
    if not state.get("structure") and state.get("searchable") is not None:
        return "a search checkpoint (multi-branch search wrappers)"
    return None


def check_finalized(model: nn.Module, finalize: bool = False) -> nn.Module:
    """Refuse (or, with ``finalize``, fold) search wrappers, in place.

    Raises:
        ConfigError: the model has multi-branch search wrappers and ``finalize`` is false.
    """
    from rfspeech.search import finalize as fold
    from rfspeech.search import searchable_modules
    from rfspeech.search.dcls import dcls_modules

    wrapped = sorted(searchable_modules(model)) + sorted(dcls_modules(model))
    if wrapped:
        if not finalize:
            raise ConfigError(
                f"model is still in search mode ({len(wrapped)} multi-branch convs, e.g. {wrapped[0]}): finalize it "
                "first (rfspeech.search.finalize, or finalize=true to merge/unwrap the wrappers on export)")
        fold(model)
    return model


def forward_inputs(model: nn.Module) -> list[str]:
    """The tensor inputs the exported graph takes: the mel, and ``noise`` for a noise-driven model."""
    from rfspeech.inference.chunked import takes_noise

    return ["mel", "noise"] if takes_noise(model) else ["mel"]


def export_onnx(model: nn.Module, out: str | Path, *, finalize: bool = False, opset: int = 17,
                example_frames: int = 16, context: Context | None = None) -> Path:
    """Export a generator to ONNX (weight norm folded, dynamic batch and length), atomically.

    Args:
        model: a mel → waveform generator (left untouched: a copy is exported).
        out: the ``.onnx`` file.
        finalize: fold search wrappers instead of refusing a model in search mode.
        opset: ONNX opset.
        example_frames: length of the tracing input (the graph is length-independent).
        context: look-ahead record for the metadata (default: computed from the model).

    Returns:
        ``out`` as a Path.

    Raises:
        ConfigError: a model in search mode without ``finalize``.
        RFSpeechError: onnx is not installed, or the exporter failed (message says why).
    """
    try:
        import onnx
    except ImportError:
        raise RFSpeechError("ONNX export needs the onnx extra: pip install 'rfspeech[onnx]'") from None
    from rfspeech.layers.weight_norm import remove_weight_norm
    from rfspeech.rf.lookahead import context as compute_context

    gen = copy.deepcopy(model).float().cpu().eval()
    check_finalized(gen, finalize)
    remove_weight_norm(gen)
    ctx = context or compute_context(gen)
    names = forward_inputs(gen)
    n_mels = int(gen.in_channels)
    hop = int(ctx.hop)
    rng = torch.Generator().manual_seed(0)  # not the global RNG: a seeded synthesis draws the same noise after export
    example: tuple[torch.Tensor, ...] = (torch.randn(1, n_mels, example_frames, generator=rng),)
    if "noise" in names:
        example += (torch.randn(1, 1, example_frames * hop, generator=rng),)
    axes = {"mel": {0: "batch", 2: "frames"}, "wav": {0: "batch", 2: "samples"}}
    if "noise" in names:
        axes["noise"] = {0: "batch", 2: "samples"}
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(gen, example, str(tmp), input_names=names, output_names=["wav"],
                                  dynamic_axes=axes, opset_version=int(opset), dynamo=False)
        except Exception as e:  # noqa: BLE001 - exporter errors are many and deep
            raise RFSpeechError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
        proto = onnx.load(str(tmp))
        meta = {"model": type(model).__name__, "in_channels": n_mels, "hop_length": hop, "inputs": names,
                "context": ctx.to_dict()}
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.save(proto, str(tmp))
    return out


class OnnxRuntimeGenerator:
    """An exported generator run by ONNX Runtime, called like the torch generator.

    ``gen(mel)`` / ``gen(mel, noise)`` → ``(B, 1, T·hop)`` torch tensor; usable wherever synthesis
    takes a generator, :func:`rfspeech.inference.chunked.synthesize_chunked` and
    :class:`rfspeech.inference.streaming.StreamingSynthesizer` included (it carries the ``context``).

    Args:
        path: a file written by :func:`export_onnx`.
        threads: intra-op threads (None: ONNX Runtime's default).
        optimization: graph optimisation level: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``.

    Raises:
        RFSpeechError: onnxruntime missing, or the file is not an rfspeech export.
    """

    def __init__(self, path: str | Path, threads: int | None = None, optimization: str = "all") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RFSpeechError("backend=onnxruntime needs the onnx extra: pip install 'rfspeech[onnx]'") from None
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if optimization not in levels:
            raise ConfigError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[optimization]
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.path = Path(path)
        if not self.path.is_file():
            raise RFSpeechError(f"{self.path}: ONNX file not found")
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise RFSpeechError(f"{self.path}: no rfspeech metadata (export it with rfspeech-export)")
        meta = json.loads(raw)
        self.in_channels = int(meta["in_channels"])
        self.hop_length = int(meta["hop_length"])
        self.input_names = list(meta["inputs"])
        self.context = context_from_dict(meta["context"])
        #: the exported generator's class name: the family the auto synthesis path is chosen for
        self.family = str(meta.get("model") or "")

    def __call__(self, mel: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        feeds: dict[str, Any] = {"mel": mel.detach().to("cpu", torch.float32).contiguous().numpy()}
        if "noise" in self.input_names:
            if noise is None:  # drawn as the torch generator draws it, so a seeded run gives the same noise
                noise = mel.new_empty((mel.shape[0], 1, mel.shape[-1] * self.hop_length)).normal_()
            feeds["noise"] = noise.detach().to("cpu", torch.float32).contiguous().numpy()
        elif noise is not None:
            raise ConfigError(f"{self.path}: this generator takes no noise")
        return torch.from_numpy(self.session.run(["wav"], feeds)[0])

    def inference(self, mel: torch.Tensor) -> torch.Tensor:
        """``(n_mels, T)`` or ``(B, n_mels, T)`` → ``(B, 1, T·hop)``, like :meth:`VocoderGenerator.inference`."""
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[1] != self.in_channels:
            raise ConfigError(f"inference expects mel of shape (n_mels={self.in_channels}, T) or "
                              f"(B, {self.in_channels}, T), got {tuple(mel.shape)}")
        return self(mel)


class LazyOnnxRuntime:
    """A torch generator exported to ONNX Runtime on first use (``backend=auto``: only if a long utterance needs it).

    Called like the generator; :meth:`close` removes the temporary file. ``export_seconds`` records the export.
    Should the export fail (an exporter limitation), the failure is logged once, recorded in ``error`` and the
    torch generator runs instead (the paths are exact, so the output is the same).

    Args:
        generator: the finalized torch generator (weight norm may still be on: the export folds it).
        threads: ONNX Runtime intra-op threads (None: torch's current count).
    """

    def __init__(self, generator: nn.Module, threads: int | None = None) -> None:
        self.generator = generator
        self.threads = threads
        self.in_channels = int(generator.in_channels)
        self.hop_length = int(generator.hop_length)
        self.family = type(generator).__name__
        self.export_seconds: float | None = None
        self.error: str | None = None
        self._ort: OnnxRuntimeGenerator | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def session(self) -> OnnxRuntimeGenerator:
        """The ONNX Runtime generator (exported now if not yet)."""
        if self._ort is None:
            import time

            t0 = time.perf_counter()
            self._tmp = tempfile.TemporaryDirectory(prefix="rfspeech-onnx-")
            with torch.random.fork_rng(devices=[]):  # the export must not move a seeded run's noise
                path = export_onnx(self.generator, Path(self._tmp.name) / "generator.onnx")
            self._ort = OnnxRuntimeGenerator(path, threads=self.threads or torch.get_num_threads())
            self.export_seconds = time.perf_counter() - t0
        return self._ort

    @property
    def context(self) -> Context:
        return self.session().context

    def __call__(self, mel: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.error is None:
            try:
                return self.session()(mel, noise)
            except RFSpeechError as e:
                import logging

                self.error = str(e)
                logging.getLogger(__name__).warning("ONNX Runtime not used (%s); torch runs instead", e)
        return self.generator(mel) if noise is None else self.generator(mel, noise)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._ort = None


@contextlib.contextmanager
def onnx_backend(generator: nn.Module | None = None, *, onnx_path: str | Path | None = None,
                 threads: int | None = None) -> Iterator[OnnxRuntimeGenerator]:
    """An :class:`OnnxRuntimeGenerator` for synthesis: from ``onnx_path``, or ``generator`` exported to a temp file.

    Args:
        generator: the finalized torch generator (exported when ``onnx_path`` is None; otherwise its
            mel bins and hop are checked against the file's).
        onnx_path: an existing :func:`export_onnx` file.
        threads: ONNX Runtime intra-op threads.

    Raises:
        ConfigError: the file's mel bins or hop differ from ``generator``'s, or neither is given.
    """
    if onnx_path is not None:
        gen = OnnxRuntimeGenerator(onnx_path, threads=threads)
        if generator is not None:
            want = (int(generator.in_channels), int(generator.hop_length))
            if (gen.in_channels, gen.hop_length) != want:
                raise ConfigError(f"{onnx_path}: the ONNX generator reads {gen.in_channels} mels at hop "
                                  f"{gen.hop_length}, the checkpoint's {want[0]} mels at hop {want[1]}")
        yield gen
        return
    if generator is None:
        raise ConfigError("onnx_backend needs a generator to export or an onnx_path")
    with tempfile.TemporaryDirectory(prefix="rfspeech-onnx-") as tmp:
        path = export_onnx(generator, Path(tmp) / "generator.onnx")
        yield OnnxRuntimeGenerator(path, threads=threads)
