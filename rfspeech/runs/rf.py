"""The ``rfspeech-rf`` run: the receptive field of a model config or a checkpoint (table, ``rf.json``, ``rf.png``).

The model is built from ``recipes/model/`` (or rebuilt from a checkpoint, its structure applied), analysed by
:func:`rfspeech.rf.analyze` (and probed by :func:`rfspeech.rf.probe` on request), and reported with the
look-ahead of a vocoder (:mod:`rfspeech.rf.lookahead`).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from rfspeech.errors import ConfigError
from rfspeech.inference import load_checkpoint, load_generator
from rfspeech.io import atomic_write_text


def _probe_shapes(model: Any, report: Any,
                  given: dict[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Inputs long enough to hold the field with a margin; noise at the output rate when the model takes it.

    With ``given`` shapes (``inputs=``), every input is lengthened by the same number of output
    samples (so inputs pre-padded outside the model keep their relation) until each holds twice
    its field plus a margin.
    """
    import inspect
    from fractions import Fraction

    from rfspeech.rf.analyze import infer_in_channels

    if given:
        jumps = {n: Fraction(report.inputs[n].exact["jump"]) for n in given if n in report.inputs}
        step = math.lcm(*(j.denominator for j in jumps.values())) if jumps else 1
        extra = 0
        while any(given[n][-1] + extra * jumps[n] < 2 * report.inputs[n].span + 8 for n in jumps):
            extra += step
        return {n: (*s[:-1], int(s[-1] + extra * jumps[n])) if n in jumps else tuple(s) for n, s in given.items()}
    params = list(inspect.signature(model.forward).parameters)
    frames = 2 * math.ceil(max(f.span for f in report.inputs.values() if f.units == report.units)) + 8
    shapes: dict[str, tuple[int, ...]] = {params[0]: (1, infer_in_channels(model), frames)}
    hop = getattr(model, "hop_length", None)
    if "noise" in params and hop:
        shapes["noise"] = (1, 1, frames * int(hop))
    return shapes


def _from_checkpoint(path: str) -> tuple[Any, str, Any, float | None, int]:
    """Generator of a training/search checkpoint (structure applied), its name, config, segment in frames
    and sample rate (its feature parameters)."""
    model, params = load_generator(path)
    config = load_checkpoint(path, map_location="cpu").get("config") or {}
    model_cfg = config.get("model") or {}
    segment_size = (config.get("train") or {}).get("segment_size")
    segment = float(segment_size) / params.hop_length if segment_size else None
    return model, str(model_cfg.get("name", "model")), model_cfg.get("generator"), segment, int(params.sample_rate)


DEFAULT_SAMPLE_RATE = 22050
#: ``segment: null`` with ``model=``: HiFi-GAN's training segment, 8192 samples / hop 256.
DEFAULT_SEGMENT_FRAMES = 32.0


def _sample_rate(cfg: Any, from_checkpoint: int | None) -> int:
    """``sample_rate=`` (a positive integer), else the checkpoint's, else 22050 Hz."""
    value = cfg.get("sample_rate")
    if value is None:
        return from_checkpoint or DEFAULT_SAMPLE_RATE
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"sample_rate must be a positive integer (Hz), got {value!r}")
    return int(value)


def _lookahead(report: Any, model: Any, sr: int) -> dict[str, Any] | None:
    """Print and return the look-ahead, history and chunk overlap of a vocoder (frames and ms), else None.

    The dict (:meth:`rfspeech.rf.lookahead.Context.to_dict`) carries the keys the compare report
    reads (``lookahead_frames``, ``history_frames``, ``_ms``), the same as ``structure.yaml``'s record.
    """
    from rfspeech.errors import RFSpeechError
    from rfspeech.rf.lookahead import context_from_report

    if not getattr(model, "hop_length", None):
        return None
    try:
        ctx = context_from_report(report)
    except RFSpeechError:
        return None
    print(f"  streaming: {ctx.summary(sr)} at {sr} Hz")
    if ctx.lookahead_mean_frames is not None:
        print(f"  (search budget measure: mean look-ahead {ctx.lookahead_mean_frames:.4g} frames over output phases; "
              f"exact max {ctx.lookahead_frames})")
    return ctx.to_dict(sr)


def _apply_structure_file(model: Any, path: str) -> None:
    """A ``structure.yaml`` (rfspeech-search) applied to ``model`` by its search strategy (plain convs, mode single)."""
    from rfspeech.search.strategy import read_structure

    strategy, structure = read_structure(path)
    strategy().apply(model, structure, mode="single")


def run(cfg: Any) -> dict[str, Any]:
    """The task behind the console script (``cfg``: the composed ``recipes/rf.yaml``)."""
    from omegaconf import OmegaConf

    from rfspeech.inference.loading import build_config_node
    from rfspeech.layers.sparse import tap_layers
    from rfspeech.rf import analyze, plot_report, probe

    segment = cfg.get("segment")
    node = "generator"
    ckpt_sr = None
    sr = _sample_rate(cfg, None)  # a bad value fails before any work
    if cfg.get("checkpoint"):
        # The model a run actually trained (its structure applied), as the recipes record it.
        model, model_name, node_cfg, ckpt_segment, ckpt_sr = _from_checkpoint(str(cfg.checkpoint))
        if segment is None:
            segment = ckpt_segment
    else:
        if "model" not in cfg:
            raise ConfigError("rf config needs a model (model=<name> from recipes/model/)")
        node = cfg.get("node") or next((n for n in ("generator", "acoustic") if n in cfg.model), "generator")
        if segment is None and node == "generator":
            segment = DEFAULT_SEGMENT_FRAMES  # a vocoder's usual training segment (8192 samples / hop 256)
        if node not in cfg.model:
            raise ConfigError(f"model config {cfg.model.get('name', '')!r} has no '{node}' node to analyse "
                              "(model=<name> from recipes/model/, node=<key>)")
        model_name = cfg.model.get("name", "model")
        # allow-listed and typed for rfspeech's models (a user's own class through Hydra): as training builds it
        model = build_config_node(cfg.model[node], f"model.{node}")
        node_cfg = OmegaConf.to_container(cfg.model[node], resolve=True)
    sr = _sample_rate(cfg, ckpt_sr)
    if cfg.get("structure"):
        _apply_structure_file(model, str(cfg.structure))
    submodule = cfg.get("submodule")
    if submodule:
        try:
            model = model.get_submodule(str(submodule))
        except AttributeError:
            children = [n for n, _ in model.named_children()]
            raise ConfigError(f"submodule={submodule}: {type(model).__name__} has no such module "
                              f"(children: {', '.join(children)})") from None
    elif node != "generator":
        children = [n for n, _ in model.named_children()]
        raise ConfigError(f"model.{node} is not a vocoder generator: choose the part to analyse with "
                          f"submodule=<name> (children: {', '.join(children)})")
    given = _input_shapes(cfg.get("inputs"))
    report = analyze(model, segment=None if segment is None else float(segment), frames=int(cfg.get("frames", 8)),
                     method=str(cfg.get("method", "auto")), hints=bool(cfg.get("hints", True)),
                     units=cfg.get("units"), inputs=given, primary=str(cfg.get("segment_input") or "auto"))
    print(report.table())
    print(report.summary())
    if segment is not None:
        print(f"  segment unit: {report.units} of input '{report.primary}'"
              + (" (segment_input=<name> to count it in another input)" if len(report.inputs) > 1 else ""))
    result = report.to_dict()
    result["segment_input"] = report.primary
    taps = tap_layers(model)
    if taps:  # learned-spacing layers (rfspeech-search search.strategy=dcls): the taps inside each field
        result["taps"] = taps
        print(f"  learned taps ({len(taps)} layers, offsets in input steps of the layer): "
              + ", ".join(f"{p} {t}" for p, t in list(taps.items())[:4]) + (" ..." if len(taps) > 4 else ""))
    lookahead = _lookahead(report, model, sr)
    if lookahead is not None:
        result["lookahead"] = lookahead
    result["config"] = {"name": model_name, node: node_cfg}
    if submodule:
        result["config"]["submodule"] = str(submodule)
    if cfg.get("checkpoint"):
        result["config"]["checkpoint"] = str(cfg.checkpoint)
    if cfg.get("structure"):
        result["config"]["structure"] = str(cfg.structure)
    if cfg.get("probe", False):
        shapes = _probe_shapes(model, report, given)
        p = probe(model, shapes, period={n: f.period for n, f in report.inputs.items()}, n_positions=report.period,
                  jump={n: Fraction(f.exact["jump"]) for n, f in report.inputs.items() if n in shapes})
        result["probe"] = {name: {"span": f.span, "lo": f.lo, "hi": f.hi, "span_min": f.span_min,
                                  "span_max": f.span_max} for name, f in p.inputs.items()}
        for name, f in p.inputs.items():
            a = report.inputs[name]
            print(f"  probe {name}: span {f.span:.6g} (analytic {a.span:.6g}) {a.units}")
    out_dir = Path(str(cfg.out_dir))
    from rfspeech.runs.controls import write_control_structure  # refine= / random_like=: a control arm's structure

    control = write_control_structure(cfg, model, report, out_dir)
    if control is not None:
        result["control"] = control
    atomic_write_text(out_dir / "rf.json", json.dumps(result, indent=2) + "\n")
    plot_report(report, out_dir / "rf.png", title=f"{model_name}: r_max {report.r_max:.4g} {report.units} "
                f"({report.r_max_samples:.0f} samples), r_min {report.r_min:.4g}")
    print(f"wrote {out_dir / 'rf.json'} and {out_dir / 'rf.png'}")
    return result


def _input_shapes(inputs: Any) -> dict[str, tuple[int, ...]] | None:
    """``inputs=`` (``{name: [batch, channels, length]}``) as shapes; None when not given."""
    if inputs is None:
        return None
    from omegaconf import DictConfig, OmegaConf

    value = OmegaConf.to_container(inputs, resolve=True) if isinstance(inputs, DictConfig) else inputs
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"inputs must map forward argument names to shapes, e.g. "
                          f"inputs='{{z:[1,1,1024],c:[1,80,8]}}', got {inputs!r}")
    out = {}
    for name, shape in value.items():
        if not isinstance(shape, (list, tuple)) or not shape or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise ConfigError(f"inputs.{name}: a shape is a list of positive integers (batch, channels, length), "
                              f"got {shape!r}")
        out[str(name)] = tuple(int(v) for v in shape)
    return out

