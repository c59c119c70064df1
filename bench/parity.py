"""Inference parity after search: searched models (``single``, ``merge``) vs the hand-designed one.

For each generator, arms with identical initial weights run rfspeech's inference path
(:func:`rfspeech.inference.speed.prepare_for_inference`, ``torch.inference_mode()``):

* ``hand``: the hand-designed (published) dilations;
* ``single``: a searched structure applied with :func:`rfspeech.search.apply_structure`
  (``mode="single"``): plain convs at the searched dilations, same parameter count;
* ``merge``: the same structure in ``mode="merge"``: each searched conv's candidate branches folded
  into one dense dilation-1 conv of ``(k-1)·r_max + 1`` taps (RF-Next's ``rfmerge``);
* ``equal``: the hand-designed model of equal size to ``merge``: the published topology with each
  searched conv replaced by a freshly initialised plain conv of the merged kernel size (dilation 1),
  built with the conv factory and no search code; same parameter count as ``merge``;
* ``multiple`` (context): the multi-branch op kept unmerged (weight norm removed, branches frozen),
  i.e. what merging is meant to save.

The searched structure is a fixed, reproducible stand-in for a search result: every searchable
conv moves to a candidate of one RF-Next expand step around its published dilation
(``round(0.5·d), d, round(1.5·d)``), drawn with a seeded RNG. Inference cost of ``single`` does not
depend on which dilations were found (same kernel, same channels); that of ``merge`` grows with the
largest candidate dilation (``r_max``), which is why the kernel taps are reported beside the time.
Parity pairs each searched model with the hand-designed model of equal size: ``single`` with the
published model (same kernels, same parameters), ``merge`` with ``equal`` (same kernels, same
parameters). The headline ``merge_parity_ratio`` = merged searched / equal-size hand-designed
inference time and ``single_parity_ratio`` = single / published (targets 1.00 ± 0.05): rfspeech's
searched models carry no inference overhead of their own. ``merge`` / published is reported beside
them, with the conv-tap ratio that explains it: RF-Next's dense merged kernel multiplies the taps of
every searched conv, and CPU convolution time follows the taps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bench.common import Row, interleaved, iqr_text, paired_ratio, round_sig
from bench.synthesis import LABELS, SAMPLE_RATE, build_generator, make_inputs

TARGET = (0.95, 1.05)
ARMS = ("hand", "single", "merge", "equal", "multiple")
#: Audio seconds per call by model: WaveNet's merged convs reach thousands of taps, so it gets less.
SECONDS = {"hifigan_v1": 1.0, "hifigan_v2": 1.0, "hifigan_v3": 1.0, "wavenet": 0.1}


def searched_structure(gen: nn.Module, seed: int = 0, expand_rate: float = 0.5) -> dict[str, int]:
    """A reproducible stand-in for a search result: one expand step around each published dilation."""
    from rfspeech.layers.conv import iter_dilated_convs
    from rfspeech.search import expand_candidates, unsearchable_reason

    rng = random.Random(seed)
    out = {}
    for path, conv in iter_dilated_convs(gen):
        if unsearchable_reason(conv) is not None:
            continue
        out[path] = rng.choice(expand_candidates(conv.dilation[0], 3, expand_rate))
    return out


def conv_taps(gen: nn.Module) -> int:
    """Σ effective kernel taps × in × out channels / groups over the 1D convs: a multiply count per step.

    A multi-branch :class:`~rfspeech.search.SearchableConv1d` counts the union of its branches'
    taps (``(k-1)·n + 1``: the centre tap is shared), not just its weight.
    """
    from rfspeech.search import SearchableConv1d

    total = 0
    inside: set[int] = set()
    for m in gen.modules():
        if isinstance(m, SearchableConv1d):
            w = m.conv.weight
            taps = (w.shape[2] - 1) * len(m.candidates) + 1
            total += int(w.shape[0] * w.shape[1] * taps)
            inside.add(id(m.conv))
        elif isinstance(m, nn.Conv1d) and not isinstance(m, nn.ConvTranspose1d) and id(m) not in inside:
            w = m.weight
            total += int(w.shape[0] * w.shape[1] * w.shape[2])
    return total


def build_arms(name: str, arms: Sequence[str], seed: int = 0) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """Generators for each arm (identical initial weights; state dict copied, never deepcopy)."""
    from rfspeech.inference.speed import prepare_for_inference
    from rfspeech.layers.weight_norm import remove_weight_norm
    from rfspeech.search import apply_structure

    torch.manual_seed(seed)
    first = build_generator(name).eval()
    state = first.state_dict()
    structure = searched_structure(first, seed=seed)
    out: dict[str, nn.Module] = {}
    if "equal" in arms and "merge" not in arms:
        raise ValueError("the 'equal' arm is sized after 'merge': include both")
    merged_kernels: dict[str, int] = {}
    for arm in sorted(arms, key=lambda a: a == "equal"):  # 'equal' after 'merge' (it copies its kernel sizes)
        gen = first if arm == "hand" else build_generator(name).eval()
        if gen is not first:
            gen.load_state_dict(state)
        if arm in ("single", "merge", "multiple"):
            apply_structure(gen, structure, mode=arm)
        if arm == "merge":
            merged_kernels = {p: int(gen.get_submodule(p).kernel_size[0]) for p in structure}
        if arm == "equal":
            _resize_convs(gen, merged_kernels)
        if arm == "multiple":
            remove_weight_norm(gen)  # keep the branches: prepare_for_inference would merge them
            gen.eval()
        else:
            prepare_for_inference(gen)
        out[arm] = gen
    return {a: out[a] for a in arms}, structure


def _resize_convs(gen: nn.Module, kernels: dict[str, int]) -> None:
    """Replace each conv at ``path`` by a fresh dilation-1 factory conv of ``kernels[path]`` taps, in place."""
    from rfspeech.layers.conv import DilatedConv1d
    from rfspeech.layers.weight_norm import apply_weight_norm

    for path, k in kernels.items():
        old = gen.get_submodule(path)
        new = DilatedConv1d(old.in_channels, old.out_channels, k, dilation=1,
                            causal=bool(getattr(old, "causal", False)), groups=old.groups, bias=old.bias is not None)
        if hasattr(old, "parametrizations"):
            apply_weight_norm(new)
        parent, _, child = path.rpartition(".")
        setattr(gen.get_submodule(parent) if parent else gen, child, new)


def measure_model(name: str, *, arms: Sequence[str], seconds: float, warmup: int, repeats: int,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the arms of one model side by side; return the parity ratios with their spread."""
    gens, structure = build_arms(name, arms)
    inputs = make_inputs(gens["hand"], seconds, seed=1)
    audio = inputs[0].shape[-1] * int(gens["hand"].hop_length) / SAMPLE_RATE

    def call(gen: nn.Module) -> Callable[[], torch.Tensor]:
        def work() -> torch.Tensor:
            with torch.inference_mode():
                return gen(*inputs)

        return work

    calls = {a: call(g) for a, g in gens.items()}
    outputs = {a: c() for a, c in calls.items()}
    tim = interleaved(calls, warmup=warmup, repeats=repeats, progress=progress)
    taps = {a: conv_taps(g) for a, g in gens.items()}
    out: dict[str, Any] = {
        "model": name,
        "audio_seconds": round_sig(audio),
        "structure_changed": sum(1 for p, d in structure.items() if d != _published(gens["hand"], p)),
        "structure_size": len(structure),
        "parameters": {a: sum(p.numel() for p in g.parameters()) for a, g in gens.items()},
        "conv_taps": taps,
        "time": {a: t.summary(per=audio, unit="audio s") for a, t in tim.items()},
        "ratio_vs_hand": {a: paired_ratio(t, tim["hand"]) for a, t in tim.items() if a != "hand"},
        "conv_taps_ratio_vs_hand": {a: round_sig(taps[a] / taps["hand"]) for a in gens if a != "hand"},
    }
    if "merge" in tim and "equal" in tim:
        out["merge_vs_equal"] = paired_ratio(tim["merge"], tim["equal"])
    if "merge" in outputs and "multiple" in outputs:
        # merging must not change the function (the search's tests assert ≤ 1e-5 on small models)
        out["merge_vs_multiple_max_abs_diff"] = float((outputs["merge"] - outputs["multiple"]).abs().max())
    return out


def _published(gen: nn.Module, path: str) -> int:
    return int(gen.get_submodule(path).dilation[0])


def run(
    *,
    quick: bool = False,
    models: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    seconds: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure inference parity of searched vs hand-designed models; see the module docstring.

    Args:
        quick: CI-sized: HiFi-GAN V2 only, 0.25 s of audio, 3 rounds.
        models: generator names (default: V1, V2 and WaveNet).
        arms: subset of :data:`ARMS` (``hand`` always included).
        warmup: untimed calls per arm.
        repeats: timed rounds (default 3 quick, 7 full).
        seconds: audio seconds per call by model (default :data:`SECONDS`, quartered in quick mode).
        progress: status-line callback.
    """
    models = list(models) if models else (["hifigan_v2"] if quick else ["hifigan_v1", "hifigan_v2", "wavenet"])
    arms = list(arms) if arms else list(ARMS)
    if "hand" not in arms:
        arms = ["hand", *arms]
    repeats = repeats if repeats is not None else (3 if quick else 7)
    secs = dict(SECONDS)
    if quick:
        secs = {k: v / 4 for k, v in secs.items()}
    secs.update(seconds or {})
    results = {}
    for m in models:
        if progress:
            progress(f"parity: {m}")
        results[m] = measure_model(m, arms=arms, seconds=secs.get(m, 1.0), warmup=warmup, repeats=repeats,
                                   progress=progress)
    rows: list[dict[str, Any]] = []
    lo, hi = TARGET
    target = f"{lo:.2f}–{hi:.2f}"
    for m, r in results.items():
        label = LABELS.get(m, m)
        audio = f"{r['audio_seconds']:.3g} s of audio per call"
        for a, ratio in r["ratio_vs_hand"].items():
            if a == "equal":
                continue
            parity = a == "single"
            what = "published hand-designed (equal size)" if parity else "published hand-designed"
            why = "" if parity else "; context: RF-Next's dense merged kernel costs more taps" if a == "merge" else ""
            rows.append(Row(
                "parity", f"{label} inference: searched {a} / {what}", ratio["ratio"], iqr_text(ratio),
                target if parity else "", bool(lo <= ratio["ratio"] <= hi) if parity else None,
                f"conv taps × {r['conv_taps_ratio_vs_hand'][a]:.3g}, parameters {r['parameters'][a]:,} vs "
                f"{r['parameters']['hand']:,}; {audio}{why}",
                cpu_ratio=ratio.get("cpu_ratio")).to_dict())
        if "merge_vs_equal" in r:
            ratio = r["merge_vs_equal"]
            rows.append(Row(
                "parity", f"{label} inference: searched merge / hand-designed of equal size", ratio["ratio"],
                iqr_text(ratio), target, bool(lo <= ratio["ratio"] <= hi),
                f"both {r['parameters']['merge']:,} parameters, conv taps × "
                f"{round_sig(r['conv_taps']['merge'] / r['conv_taps']['equal']):.3g}; {audio}",
                cpu_ratio=ratio.get("cpu_ratio")).to_dict())
    head = results[models[0]]
    keys: dict[str, Any] = {
        "merge_parity_ratio": head["merge_vs_equal"]["ratio"] if "merge_vs_equal" in head else None,
        "merge_vs_published_ratio": head["ratio_vs_hand"]["merge"]["ratio"] if "merge" in head["ratio_vs_hand"]
        else None,
        "single_parity_ratio": head["ratio_vs_hand"]["single"]["ratio"] if "single" in head["ratio_vs_hand"]
        else None,
        "parity": {m: {a: r["ratio_vs_hand"][a]["ratio"] for a in r["ratio_vs_hand"]} for m, r in results.items()},
        "parity_model": models[0],
    }
    return {"models": results, "keys": keys, "rows": rows, "target": list(TARGET)}
