"""Typed run configs: the composed Hydra config of a console script, checked once and turned into dataclasses.

Every console script's config is validated here, at the edge, before any work (no model is built, no
file is written): types are strict (``batch_size=1.5`` is not truncated, ``resume=maybe`` is not
true), ranges and cross-field rules are checked (``fmin < fmax <= sample_rate / 2``, a segment that is
a multiple of the hop, an available device, fp16 only on CUDA ...), and a bad value is one
:class:`~rfspeech.errors.ConfigError` ``<key>: <what is wrong>`` (``error: ...``, exit 2, from
:mod:`rfspeech.bin._cli`).

The trainers take the dataclasses instead of dozens of keyword arguments:

* :class:`RunConfig` — the run's top-level keys (data_dir, out_dir, seed, device, amp, resume ...);
* :class:`LoopConfig` — the training loop of ``train.*`` / ``tts.*`` (batch, steps, intervals, clipping);
* :class:`GANConfig` — the vocoder's GAN step (segment, loss weights, STFT loss, discriminator start);
* :class:`AcousticConfig` — the acoustic model's data options (``tts.*``);
* :class:`GANOptim` / :class:`Optim` — optimiser and scheduler factories (``params -> Optimizer``);
* :class:`ModelSetup` — how the model was built (structure, searchable wrapping, local search).

:func:`validate` maps a config name (``train``, ``train_tts``, ``search``, ``prepare``, ``synthesize``,
``evaluate``, ``compare``, ``rf``, ``export``, ``gta``, ``check_mels``, ``import``) to its checks;
:func:`vocoder_run` / :func:`acoustic_run` build the typed objects of a training run. Constructing a
dataclass directly trusts its caller; :meth:`build` checks.

This module imports no torch at load time: validation runs before the heavy imports.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from rfspeech.checks import (
    MAX_DILATION,
    MAX_SAMPLE_RATE,
    MAX_SEGMENT_SIZE,
    MAX_TAP_OFFSET,
    UNRESOLVED,
    boolean,
    check_feature_params,
    choice,
    integer,
    known,
    omitted,
    range_error,
    real,
)
from rfspeech.errors import ConfigError

__all__ = ["AcousticConfig", "GANConfig", "GANOptim", "LoopConfig", "ModelSetup", "Optim", "RunConfig", "VocoderRun",
           "acoustic_run", "build_checked", "check_device", "check_model_chosen", "did_you_mean", "validate",
           "validator", "vocoder_run"]

# The value checks and the feature-parameter rules live in rfspeech.checks (the foundation layer): the checkpoint
# schema (rfspeech.inference) and FeatureParams (rfspeech.data) use the same rules from below this module.
_int = integer
_float = real
_bool = boolean
_choice = choice
_range_error = range_error


def _path(key: str, value: Any, optional: bool = True) -> str | None:
    if value is None or value == "":
        if optional:
            return None
        raise ConfigError(f"{key} is required (pass {key}=...)")
    if isinstance(value, bool) or not isinstance(value, str | int | float | os.PathLike):
        raise ConfigError(f"{key}: must be a path, got {value!r}")
    return str(value)


def check_device(key: str, value: Any, *, amp: Any = None, amp_key: str = "amp") -> str:
    """Check ``auto | cpu | cuda | cuda:N`` (available on this machine) and that fp16 autocast is on CUDA."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be auto, cpu, cuda or cuda:N, got {value!r}")
    name = value.lower()
    index = name.split(":", 1)[1] if name.startswith("cuda:") else None
    if name not in ("auto", "cpu", "cuda") and not (index is not None and index.isdigit()):
        raise ConfigError(f"{key}: must be auto, cpu, cuda or cuda:N, got {value!r}")
    on_cuda = False
    if name != "cpu" and (name != "auto" or amp == "fp16"):
        import torch  # only when CUDA matters: cpu runs are validated without the heavy import

        available = torch.cuda.is_available()
        if name.startswith("cuda") and not available:
            raise ConfigError(f"{key}: {value}: CUDA is not available on this machine (use device=cpu)")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{key}: {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        on_cuda = available
    if amp == "fp16" and not on_cuda:
        raise ConfigError(f"{amp_key}: fp16 autocast needs a CUDA device (device={value}); use amp=null or bf16")
    return value


def did_you_mean(word: str, candidates: Any) -> str:
    """``"; did you mean X?"`` for the nearest candidate (difflib), or ``""``."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


# ------------------------------------------------------------------------------------------- dataclasses
def _opt(**check: Any) -> dict[str, Any]:
    return {"check": check}


def _build(cls: Any, node: Mapping[str, Any], where: str, rename: Mapping[str, str] | None = None) -> Any:
    """Instantiate dataclass ``cls`` from the keys of ``node`` it has, each checked by its field metadata."""
    rename = rename or {}
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = next((k for k, v in rename.items() if v == f.name), f.name)
        if key not in node:
            continue
        check = f.metadata.get("check")
        name = f"{where}.{key}" if where else key
        kwargs[f.name] = _apply(check, name, node[key]) if check is not None else node[key]
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in kwargs]
    if missing:
        key = f"{where + '.' if where else ''}{missing[0]}"
        raise ConfigError(f"{key} is required (pass {key}=...)")
    return cls(**kwargs)


def _apply(check: dict[str, Any], key: str, value: Any) -> Any:
    kind = check["type"]
    opts = {k: v for k, v in check.items() if k != "type"}
    if kind == "int":
        return _int(key, value, **opts)
    if kind == "float":
        return _float(key, value, **opts)
    if kind == "bool":
        return _bool(key, value, **opts)
    if kind == "path":
        return _path(key, value, **opts)
    if kind == "choice":
        return _choice(key, value, opts["choices"])
    raise AssertionError(kind)


def _i(**kw: Any) -> dict[str, Any]:
    return _opt(type="int", **kw)


def _f(**kw: Any) -> dict[str, Any]:
    return _opt(type="float", **kw)


def _b(**kw: Any) -> dict[str, Any]:
    return _opt(type="bool", **kw)


@dataclass(frozen=True)
class RunConfig:
    """The top-level keys of a training run (``recipes/train.yaml``, ``search.yaml``, ``train_tts.yaml``).

    Attributes:
        data_dir: prepared corpus (``rfspeech-prepare`` output).
        out_dir: run directory (``checkpoints/``, ``tensorboard/``, ``config.yaml``).
        seed: seed of initialisation and sampling (>= 0).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        amp: None, ``"bf16"`` or ``"fp16"`` (fp16: CUDA only, with loss scaling).
        compile: ``torch.compile`` the training forwards (vocoder only).
        resume: continue from the newest readable checkpoint in ``out_dir`` (fresh start when none).
        init_from: checkpoint to fine-tune from (weights only).
        tensorboard: write TensorBoard events (rank 0).
        progress: show a tqdm progress bar (rank 0).
    """

    data_dir: str = field(metadata=_opt(type="path", optional=False))
    out_dir: str = field(metadata=_opt(type="path", optional=False))
    seed: int = field(default=1234, metadata=_i(ge=0))
    device: str = "auto"
    amp: str | None = field(default=None, metadata=_opt(type="choice", choices=(None, "bf16", "fp16")))
    compile: bool = field(default=False, metadata=_b())
    resume: bool = field(default=False, metadata=_b())
    init_from: str | None = field(default=None, metadata=_opt(type="path"))
    tensorboard: bool = field(default=True, metadata=_b())
    progress: bool = field(default=True, metadata=_b())

    @classmethod
    def build(cls, node: Mapping[str, Any], where: str = "") -> RunConfig:
        run = _build(cls, node, where)
        check_device("device", run.device, amp=run.amp)
        return run


@dataclass(frozen=True)
class LoopConfig:
    """The training loop (``train.*`` of the vocoder, ``tts.*`` of the acoustic model).

    Attributes:
        batch_size: global batch size (all ranks together).
        max_steps: stop after this many optimiser steps.
        num_workers: DataLoader worker processes per rank.
        grad_clip: clip gradient norms to this value (None: no clipping; the norm is still logged).
        max_bad_steps: consecutive non-finite steps that stop training.
        log_interval: steps between scalar writes.
        checkpoint_interval: steps between checkpoints (>= 1 in a console script's config; 0, only at the end,
            for throw-away runs built in code such as global-search candidates).
        keep_last: step checkpoints kept (``best.pt`` is kept apart).
        validation_interval: steps between validations (0: never).
        val_max_utts: dev utterances used by validation.
        save_last: write a checkpoint when training ends (off for throw-away runs: global-search candidates).
    """

    batch_size: int = field(default=16, metadata=_i(ge=1))
    max_steps: int = field(default=2_500_000, metadata=_i(ge=0))
    num_workers: int = field(default=2, metadata=_i(ge=0))
    grad_clip: float | None = field(default=None, metadata=_f(gt=0.0, optional=True))
    max_bad_steps: int = field(default=10, metadata=_i(ge=1))
    log_interval: int = field(default=100, metadata=_i(ge=1))
    checkpoint_interval: int = field(default=5000, metadata=_i(ge=0))
    keep_last: int = field(default=5, metadata=_i(ge=1))
    validation_interval: int = field(default=1000, metadata=_i(ge=0))
    val_max_utts: int = field(default=16, metadata=_i(ge=0))
    save_last: bool = field(default=True, metadata=_b())


#: ``train.loss_weights`` keys → :class:`GANConfig` fields.
LOSS_WEIGHT_FIELDS = {"adv": "lambda_adv", "fm": "lambda_fm", "mel": "lambda_mel", "stft": "lambda_stft"}


@dataclass(frozen=True)
class GANConfig:
    """The vocoder's GAN step (``train.*`` besides the loop and the optimisers).

    Attributes:
        segment_size: training segment in samples (a multiple of the hop).
        lr_decay_unit: ``"epoch"`` or ``"step"`` (when the schedulers step).
        lambda_adv: weight of the generator's adversarial loss (``loss_weights.adv``).
        lambda_fm: weight of feature matching (``loss_weights.fm``).
        lambda_mel: weight of the mel L1 (``loss_weights.mel``).
        lambda_stft: weight of the multi-resolution STFT loss (``loss_weights.stft``).
        stft_resolutions: its ``(fft_size, hop_size, win_length)`` triples (None: ParallelWaveGAN's).
        discriminator_start_step: steps trained without the discriminator before the GAN starts.
        loss_mel: overrides of the feature parameters for the loss mel (None: ``{"fmax": None}``).
        n_audio_samples: validation utterances whose audio and mel images go to TensorBoard.
        min_segment_frames: smallest accepted segment (in frames).
    """

    segment_size: int = field(default=8192, metadata=_i(ge=1, le=MAX_SEGMENT_SIZE))
    lr_decay_unit: str = field(default="epoch", metadata=_opt(type="choice", choices=("epoch", "step")))
    lambda_adv: float = field(default=1.0, metadata=_f(ge=0.0))
    lambda_fm: float = field(default=2.0, metadata=_f(ge=0.0))
    lambda_mel: float = field(default=45.0, metadata=_f(ge=0.0))
    lambda_stft: float = field(default=0.0, metadata=_f(ge=0.0))
    stft_resolutions: Any = None
    discriminator_start_step: int = field(default=0, metadata=_i(ge=0))
    loss_mel: dict[str, Any] | None = None
    n_audio_samples: int = field(default=4, metadata=_i(ge=0))
    min_segment_frames: int = field(default=4, metadata=_i(ge=1))


@dataclass(frozen=True)
class AcousticConfig:
    """The acoustic model's data options (``tts.*`` besides the loop and the optimiser).

    Attributes:
        n_mel_images: validation utterances whose predicted mels go to TensorBoard.
        max_frames: drop training utterances longer than this (None: keep all).
        bucket_batches: batches per length bucket of the sampler.
        skip_bad: skip unusable utterances (logged) instead of failing.
    """

    n_mel_images: int = field(default=2, metadata=_i(ge=0))
    max_frames: int | None = field(default=None, metadata=_i(ge=1, optional=True))
    bucket_batches: int = field(default=8, metadata=_i(ge=1))
    skip_bad: bool = field(default=False, metadata=_b())


@dataclass(frozen=True)
class GANOptim:
    """Optimiser and scheduler factories of the generator and the discriminator.

    Attributes:
        optimizer_g: ``params -> Optimizer`` (e.g. ``functools.partial(torch.optim.AdamW, lr=2e-4)``).
        optimizer_d: the same for the discriminator.
        scheduler_g: ``optimizer -> LRScheduler`` or None (constant learning rate).
        scheduler_d: the same for the discriminator.
    """

    optimizer_g: Callable[..., Any]
    optimizer_d: Callable[..., Any]
    scheduler_g: Callable[..., Any] | None = None
    scheduler_d: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Optim:
    """Optimiser and scheduler factories of a single-model trainer.

    Attributes:
        optimizer: ``params -> Optimizer``.
        scheduler: ``optimizer -> LRScheduler`` (stepped every step) or None.
    """

    optimizer: Callable[..., Any]
    scheduler: Callable[..., Any] | None = None


@dataclass
class ModelSetup:
    """How the trained model was built (recorded in checkpoints), and the local search driving it.

    Attributes:
        structure: fixed structure the model was built with ({module path: dilation}) or None.
        structure_mode: ``single`` / ``multiple`` / ``merge``.
        structure_args: SearchableConv1d arguments the structure was applied with (multiple/merge).
        init_generator: with ``init_from``, load the model weights too (False when the caller already
            loaded them, e.g. before applying a structure).
        search: local search object (``after_step``, ``state_dict``, ``load_state_dict``) or None.
        searchable: the search strategy's record of the wrapping (:meth:`SearchStrategy.record`; recorded
            for rebuilding, :func:`rfspeech.search.strategy.strategy_from_record`).
    """

    structure: dict[str, int] | None = None
    structure_mode: str = "single"
    structure_args: dict[str, Any] = field(default_factory=dict)
    init_generator: bool = True
    search: Any | None = None
    searchable: dict[str, Any] | None = None


_STRUCTURE_MODES = ("single", "multiple", "merge")


def build_checked(cls: Any, values: Mapping[str, Any], where: str, rename: Mapping[str, str] | None = None) -> Any:
    """Dataclass ``cls`` from ``values`` (its field names, or ``rename``'s keys), every value checked."""
    if cls is RunConfig:
        return RunConfig.build(values, where)
    return _build(cls, values, where, rename)


# ------------------------------------------------------------------------------------------- helpers
def plain(cfg: Any) -> Any:
    """A plain container of ``cfg`` with interpolations resolved (:data:`UNRESOLVED` where that fails)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # one unresolvable value: resolve key by key
            out: dict[str, Any] = {}
            for k in cfg.keys():
                try:
                    out[str(k)] = plain(cfg[k])
                except Exception:
                    out[str(k)] = UNRESOLVED
            return out
    if isinstance(cfg, ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


_known = known


def OMISSING(v: Any) -> bool:  # noqa: N802 - mirrors OmegaConf's '???'
    return omitted(v)


def _section(node: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key)
    if value is None or value is UNRESOLVED:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping, got {value!r}")
    return _known(value)


def _hop_of(cfg: Mapping[str, Any]) -> int | None:
    """The features' hop: ``features.hop_length`` or ``data_dir/feats.yaml`` (None when unknown or unreadable)."""
    feats = cfg.get("features")
    if isinstance(feats, Mapping) and isinstance(feats.get("hop_length"), int):
        return int(feats["hop_length"])
    data_dir = cfg.get("data_dir")
    if not isinstance(data_dir, str) or data_dir in ("", "???"):
        return None
    path = Path(data_dir) / "feats.yaml"
    try:
        import yaml

        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
        hop = d.get("hop_length") if isinstance(d, dict) else None
        return hop if isinstance(hop, int) and not isinstance(hop, bool) and hop > 0 else None
    except Exception:  # a missing or broken feats.yaml is reported by the data checks with its path
        return None


def _each(d: Mapping[str, Any], where: str, rules: Mapping[str, tuple[Callable[..., Any], dict[str, Any]]]) -> None:
    """Apply ``rules`` ({key: (check, its keyword arguments)}) to the keys of ``d`` that are present."""
    for key, (check, kw) in rules.items():
        if key in d:
            check(f"{where}.{key}" if where else key, d[key], **kw)


_OPTIMIZER_RULES = {"lr": (_float, {"gt": 0.0}), "eps": (_float, {"gt": 0.0}), "weight_decay": (_float, {"ge": 0.0}),
                    "momentum": (_float, {"ge": 0.0})}
_SCHEDULER_RULES = {"gamma": (_float, {"gt": 0.0, "le": 1.0}), "warmup_steps": (_int, {"ge": 0}),
                    "decay": (_choice, {"choices": ("none", "inv_sqrt")}), "step_size": (_int, {"ge": 1}),
                    "T_max": (_int, {"ge": 1})}


def _check_node(node: Any, key: str, rules: Mapping[str, tuple[Callable[..., Any], dict[str, Any]]]) -> dict[str, Any]:
    """The checked keys of an optimiser/scheduler node (``{}`` when null or unresolved)."""
    if node is None or node is UNRESOLVED:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key}: must be a mapping with _target_ (or null), got {node!r}")
    d = _known(node)
    _each(d, key, rules)
    return d


def _check_optimizer(node: Any, key: str) -> None:
    """``lr > 0`` finite, ``betas`` in [0, 1), ``eps > 0``, ``weight_decay >= 0`` of an optimiser node."""
    d = _check_node(node, key, _OPTIMIZER_RULES)
    if "betas" in d:
        betas = d["betas"]
        if not isinstance(betas, list | tuple) or len(betas) != 2:
            raise ConfigError(f"{key}.betas: must be a pair [beta1, beta2], got {betas!r}")
        for i, b in enumerate(betas):
            _float(f"{key}.betas[{i}]", b, ge=0.0, lt=1.0)


def _check_scheduler(node: Any, key: str) -> None:
    """``gamma`` in (0, 1], ``warmup_steps >= 0``, ``decay`` in {none, inv_sqrt} of a scheduler node."""
    _check_node(node, key, _SCHEDULER_RULES)


def _check_structure(cfg: Mapping[str, Any]) -> None:
    """``structure_mode``, and the dilations of ``structure=`` (integers in [1, MAX_DILATION])."""
    if "structure_mode" in cfg and cfg["structure_mode"] is not UNRESOLVED:
        _choice("structure_mode", cfg["structure_mode"] or "single", _STRUCTURE_MODES)
    path = cfg.get("structure")
    if not path or path is UNRESOLVED:
        return
    # Imported here: rfspeech.search loads torch, which validation of every other config does without.
    from rfspeech.search.strategy import RFNext, read_structure

    cls, structure = read_structure(str(path))  # the file's strategy validates its values
    if issubclass(cls, RFNext) or cls.name == "dcls":
        for module, dilation in structure.items():
            if isinstance(dilation, list):  # tap offsets of a learned-spacing layer (search.strategy=dcls)
                for i, o in enumerate(dilation):
                    _int(f"structure ({path}): {module}[{i}]", o, ge=-MAX_TAP_OFFSET, le=MAX_TAP_OFFSET)
                continue
            _dilation(f"structure ({path}): {module}", dilation)



def _dilation(key: str, value: Any) -> int:
    return _int(key, value, ge=1, le=MAX_DILATION)


def _check_searchable(node: Mapping[str, Any], where: str) -> None:
    d = _known(node)
    if "num_branches" in d:
        _int(f"{where}.num_branches", d["num_branches"], ge=1, le=64)
    if "expand_rate" in d:
        _float(f"{where}.expand_rate", d["expand_rate"], gt=0.0, le=1.0)
    lo = _dilation(f"{where}.min_dilation", d["min_dilation"]) if "min_dilation" in d else 1
    if "max_dilation" in d:
        hi = _dilation(f"{where}.max_dilation", d["max_dilation"])
        if hi < lo:
            raise ConfigError(f"{where}.max_dilation: must be >= min_dilation ({lo}), got {hi}")
    # warm_start null: decided from init_from (rfspeech.runs.search)
    for key in ("warm_share", "warm_share_end"):
        if key in d:
            _float(f"{where}.{key}", d[key], gt=0.0, lt=1.0, optional=key == "warm_share_end")
    if "warm_anneal_rounds" in d:
        _int(f"{where}.warm_anneal_rounds", d["warm_anneal_rounds"], ge=1, optional=True)
    _each(d, where, {"warm_start": (_bool, {"optional": True}), "enabled": (_bool, {}), "keep_alpha": (_bool, {}),
                     "search_interval": (_int, {"ge": 1}), "max_search_steps": (_int, {"ge": 0})})


def _check_global(node: Mapping[str, Any], where: str) -> None:
    d = _known(node)
    ints = {"population": 1, "generations": 0, "elite": 0, "candidate_steps": 1, "candidate_val_utts": 1,
            "n_workers": 1, "max_unproductive": 0}
    for key, lo in ints.items():
        if key in d:
            _int(f"{where}.{key}", d[key], ge=lo)
    for key in ("mutation", "crossover", "immigrants"):
        if key in d:
            _float(f"{where}.{key}", d[key], ge=0.0, le=1.0)
    for key in ("enabled", "seed_hand_designed", "prune"):
        if key in d:
            _bool(f"{where}.{key}", d[key])
    if d.get("threads_per_worker") is not None:
        _int(f"{where}.threads_per_worker", d["threads_per_worker"], ge=1)
    if d.get("backend") is not None:
        from rfspeech.search.backends import BACKENDS, make_backend  # torch-free, but only search configs need it

        if d["backend"] not in BACKENDS:
            make_backend(str(d["backend"]), where=f"{where}.backend")  # the one-line error naming the registered
    if d.get("ray_address") is not None and not isinstance(d["ray_address"], str):
        raise ConfigError(f"{where}.ray_address: must be null, auto or HOST:PORT, got {d['ray_address']!r}")
    if "num_cpus" in d:
        _float(f"{where}.num_cpus", d["num_cpus"], gt=0.0)
    if "num_gpus" in d:
        _float(f"{where}.num_gpus", d["num_gpus"], ge=0.0)
    if "max_retries" in d:
        _int(f"{where}.max_retries", d["max_retries"], ge=0)
    if "retry_exceptions" in d:
        _bool(f"{where}.retry_exceptions", d["retry_exceptions"])
    if "choices" in d:
        choices = d["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices: must be a non-empty list of dilations, got {choices!r}")
        for i, c in enumerate(choices):
            _dilation(f"{where}.choices[{i}]", c)
    pop, elite = d.get("population"), d.get("elite")
    if isinstance(pop, int) and isinstance(elite, int) and elite > pop:
        raise ConfigError(f"{where}.elite: must be <= population ({pop}), got {elite}")


# ------------------------------------------------------------------------------------------- runs
def _check_train_section(cfg: Mapping[str, Any], section: str, extra: Any) -> tuple[LoopConfig, Any]:
    node = _section(cfg, section)
    loop = _build(LoopConfig, node, section)
    if loop.checkpoint_interval < 1:
        # docs/reliability.md: a killed run loses at most this many steps; 0 (checkpoint only at the end) is
        # for throw-away library runs (global-search candidates), not for a console script's run.
        raise ConfigError(f"{section}.checkpoint_interval: must be >= 1 (steps a killed run can lose; set it above "
                          f"max_steps for a checkpoint at the end only), got {loop.checkpoint_interval}")
    if extra is GANConfig:
        weights = node.get("loss_weights")
        if weights is not None and not isinstance(weights, Mapping):
            raise ConfigError(f"{section}.loss_weights: must be a mapping {{adv, fm, mel, stft}}, got {weights!r}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(LOSS_WEIGHT_FIELDS))
        if unknown:
            raise ConfigError(f"{section}.loss_weights: unknown key(s) {unknown}; known: {list(LOSS_WEIGHT_FIELDS)}"
                              f"{did_you_mean(unknown[0], LOSS_WEIGHT_FIELDS)}")
        flat = {**node, **{f"loss_weights.{k}": v for k, v in weights.items()}}
        gan = _build(GANConfig, flat, section, rename={f"loss_weights.{k}": v for k, v in LOSS_WEIGHT_FIELDS.items()})
        hop = _hop_of(cfg)
        if hop is not None and gan.segment_size % hop:
            raise ConfigError(f"{section}.segment_size: must be a multiple of the hop length ({hop}), "
                              f"got {gan.segment_size}")
        if gan.loss_mel is not None and not isinstance(gan.loss_mel, Mapping):
            raise ConfigError(f"{section}.loss_mel: must be a mapping of feature-parameter overrides or null")
        for key in ("optimizer_g", "optimizer_d"):
            _check_optimizer(node.get(key), f"{section}.{key}")
        for key in ("scheduler_g", "scheduler_d"):
            _check_scheduler(node.get(key), f"{section}.{key}")
        return loop, gan
    acoustic = _build(AcousticConfig, node, section)
    _check_optimizer(node.get("optimizer"), f"{section}.optimizer")
    _check_scheduler(node.get("scheduler"), f"{section}.scheduler")
    return loop, acoustic


def _check_run_top(cfg: Mapping[str, Any]) -> RunConfig:
    top = _known(cfg)
    run = RunConfig.build(top)
    if cfg.get("features") is not None:
        check_feature_params(cfg.get("features"), "features")
    _check_structure(cfg)
    return run


def check_model_chosen(cfg: Mapping[str, Any]) -> None:
    """A vocoder run needs a model: ``model=<preset>``, or ``init_from=`` whose checkpoint brings one."""
    if cfg.get("model") is None and not cfg.get("init_from"):
        from rfspeech.config import group_options

        names = ", ".join(name for name, _ in group_options("model", node="generator")[0])
        raise ConfigError(f"model: none chosen: pass model=<preset> ({names}) or init_from=CKPT to use the "
                          "checkpoint's model")


def validate_train(cfg: Mapping[str, Any]) -> tuple[RunConfig, LoopConfig, GANConfig]:
    """Checks of ``rfspeech-train`` (``recipes/train.yaml``); returns the typed run."""
    check_model_chosen(cfg)
    run = _check_run_top(cfg)
    loop, gan = _check_train_section(cfg, "train", GANConfig)
    return run, loop, gan


def _check_dcls(node: Mapping[str, Any], where: str) -> None:
    """``search.dcls``: the learned-spacing search's settings (types and ranges; null keeps a default)."""
    d = _known(node)
    if d.get("max_dilation") is not None:
        _dilation(f"{where}.max_dilation", d["max_dilation"])
    if d.get("version") is not None:
        _choice(f"{where}.version", d["version"], ("gauss", "max", "v1"))
    _each(d, where, {"dilated_kernel_size": (_int, {"ge": 3, "le": MAX_TAP_OFFSET * 2 + 1, "optional": True}),
                     "warm_start": (_bool, {"optional": True}),
                     "sigma_init": (_float, {"ge": 0.0, "optional": True}),
                     "sigma_final": (_float, {"ge": 0.0, "optional": True}),
                     "anneal_steps": (_int, {"ge": 0, "optional": True}),
                     "search_steps": (_int, {"ge": 1, "optional": True}),
                     "position_lr": (_float, {"gt": 0.0, "optional": True}),
                     "position_warmup": (_int, {"ge": 0, "optional": True})})


def validate_search(cfg: Mapping[str, Any]) -> tuple[RunConfig, LoopConfig, GANConfig]:
    """Checks of ``rfspeech-search`` (``recipes/search.yaml``): the training run and ``search.*``."""
    run, loop, gan = validate_train(cfg)
    search = _section(cfg, "search")
    if search.get("strategy") not in (None, UNRESOLVED):
        from rfspeech.search.strategy import get_strategy  # torch, only for a search config

        get_strategy(search["strategy"])
    _check_dcls(_section(search, "dcls"), "search.dcls")
    _check_searchable(_section(search, "searchable"), "search.searchable")
    _check_searchable(_section(search, "local"), "search.local")
    _check_global(_section(search, "global"), "search.global")
    if "dist_timeout_s" in cfg and cfg["dist_timeout_s"] is not UNRESOLVED:
        _float("dist_timeout_s", cfg["dist_timeout_s"], gt=0.0)
    return run, loop, gan


def validate_train_tts(cfg: Mapping[str, Any]) -> tuple[RunConfig, LoopConfig, AcousticConfig]:
    """Checks of ``rfspeech-train-tts`` (``recipes/train_tts.yaml``)."""
    if cfg.get("amp") == "fp16":
        raise ConfigError("amp: must be null or bf16 for the acoustic model, got 'fp16'")
    run = _check_run_top(cfg)
    loop, acoustic = _check_train_section(cfg, "tts", AcousticConfig)
    _check_searchable(_section(cfg, "search"), "search")
    return run, loop, acoustic


def validate_prepare(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-prepare`` (``recipes/prepare.yaml``)."""
    d = _known(cfg)
    for key in ("features", "skip_bad", "trim", "progress"):
        if key in d:
            _bool(key, d[key])
    if "resample" in d:
        _bool("resample", d["resample"], optional=True)
    if "trim_top_db" in d:
        _float("trim_top_db", d["trim_top_db"], gt=0.0)
    if "nj" in d:
        _int("nj", d["nj"], ge=1, optional=True)
    corpus = _section(cfg, "corpus")
    for key in ("dev_size", "eval_size", "dev_per_speaker", "eval_per_speaker"):
        if corpus.get(key) is not None:
            _int(f"corpus.{key}", corpus[key], ge=0)
    check_feature_params(cfg.get("mel"), "mel")


def validate_synthesize(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-synthesize`` (``recipes/synthesize.yaml``)."""
    d = _known(cfg)
    if "device" in d:
        check_device("device", d["device"])
    if "batch_size" in d:
        _int("batch_size", d["batch_size"], ge=1)
    if "threads" in d:
        _int("threads", d["threads"], ge=1, optional=True)
    if "max_utts" in d:
        _int("max_utts", d["max_utts"], ge=1, optional=True)
    if "seed" in d:
        _int("seed", d["seed"], ge=0, optional=True)
    for key in ("check_features", "warmup", "progress"):
        if key in d:
            _bool(key, d[key])
    if "peak_normalize" in d:
        _bool("peak_normalize", d["peak_normalize"], optional=True)
    if "mel_layout" in d:
        _choice("mel_layout", d["mel_layout"], (None, "auto", "mels_frames", "frames_mels"))
    if "length_scale" in d:
        _float("length_scale", d["length_scale"], gt=0.0)
    if d.get("chunk_frames") is not None and str(d["chunk_frames"]).strip().lower() != "auto":
        _int("chunk_frames", d["chunk_frames"], ge=1)
    if "backend" in d:
        _choice("backend", d["backend"], ("torch", "onnxruntime", "auto"))
    if "precision" in d:
        _choice("precision", d["precision"], ("fp32", "bf16"))


def validate_evaluate(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-evaluate`` (``recipes/evaluate.yaml``): run keys here, metric options in the registry."""
    d = _known(cfg)
    if "jobs" in d:
        _int("jobs", d["jobs"], ge=1)
    if "min_duration" in d:
        _float("min_duration", d["min_duration"], ge=0.0)
    if "silence_db" in d:
        _float("silence_db", d["silence_db"], le=0.0)
    for key in ("progress", "peak_normalize", "mcd_include_c0"):
        if key in d:
            _bool(key, d[key])
    if "ids_from" in d:
        _choice("ids_from", d["ids_from"], ("union", "synthesized", "reference"))
    if "pesq_mode" in d:
        _choice("pesq_mode", d["pesq_mode"], ("wb", "nb"))
    lo = _float("f0_min", d["f0_min"], gt=0.0) if "f0_min" in d else None
    if "f0_max" in d:
        hi = _float("f0_max", d["f0_max"], gt=0.0)
        if lo is not None and hi <= lo:
            raise ConfigError(f"f0_max: must be > f0_min ({lo:g}), got {hi:g}")
    for key in ("frame_periodicity_hop", "crepe_hop", "lag_hop_autocorr_hop", "pitch_hop"):
        if key in d:
            _int(key, d[key], ge=1, optional=True)
    if "pitch_tol_hz" in d:
        _float("pitch_tol_hz", d["pitch_tol_hz"], gt=0.0)
    if "pitch_method" in d:
        _choice("pitch_method", d["pitch_method"], ("rapt", "swipe", "pyin"))
    lo = _float("pitch_min", d["pitch_min"], gt=0.0) if "pitch_min" in d else None
    if "pitch_max" in d:
        hi = _float("pitch_max", d["pitch_max"], gt=0.0)
        if lo is not None and hi <= lo:
            raise ConfigError(f"pitch_max: must be > pitch_min ({lo:g}), got {hi:g}")
    if "asr_reference" in d:
        _bool("asr_reference", d["asr_reference"])
    if d.get("transcripts") is not None and not isinstance(d["transcripts"], str):
        raise ConfigError(f"transcripts: must be a file path or null, got {d['transcripts']!r}")
    metrics = d.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics)):
        raise ConfigError(f"metrics: must be a list of metric names, got {metrics!r}")


def validate_compare(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-compare`` (``recipes/compare.yaml``)."""
    d = _known(cfg)
    for key in ("max_audio", "max_spectrograms"):
        if key in d:
            _int(key, d[key], ge=0)
    if "max_audio_seconds" in d:
        _float("max_audio_seconds", d["max_audio_seconds"], gt=0.0, optional=True)
    if "min_runs" in d:
        _int("min_runs", d["min_runs"], ge=2)
    if "method" in d:
        _choice("method", d["method"], ("t", "bootstrap"))
    if "level" in d:
        _float("level", d["level"], ge=0.5, lt=1.0)
    if "n_boot" in d:
        _int("n_boot", d["n_boot"], ge=100)
    if "margin" in d:
        _float("margin", d["margin"], gt=0.0, optional=True)
    if d.get("primary") is not None and not isinstance(d["primary"], str):
        raise ConfigError(f"primary: must be a metric column name or null, got {d['primary']!r}")
    th = d.get("thresholds")
    if th is not None:
        if not isinstance(th, Mapping):
            raise ConfigError(f"thresholds: must be a mapping of metric column to a threshold, got {th!r}")
        for k, v in th.items():
            _float(f"thresholds.{k}", v, ge=0.0)


_SPLITS = ("train", "dev", "eval")
_MEL_LAYOUTS = ("auto", "mels_frames", "frames_mels")


def _paths(cfg: Mapping[str, Any], required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> None:
    """Path keys: a required one must be given (not null, empty or ``???``), any given one must be a path
    (a string or a number: a folder may be called ``2024``), never a list, a mapping or a bool."""
    for key in required:
        value = cfg.get(key)
        if value is UNRESOLVED:
            continue
        if value is None or value == "" or OMISSING(value):
            raise ConfigError(f"{key} is required (pass {key}=...)")
        _path(key, value, optional=False)
    for key in optional:
        value = cfg.get(key)
        if value is not UNRESOLVED and not OMISSING(value):
            _path(key, value)


def _optional_str(d: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key in d and d[key] is not None and not isinstance(d[key], str):
            raise ConfigError(f"{key}: must be a string or null, got {d[key]!r}")


def validate_rf(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-rf`` (``recipes/rf.yaml``)."""
    d = _known(cfg)
    _paths(cfg, required=("out_dir",), optional=("checkpoint", "structure"))
    if d.get("segment") is not None:
        _float("segment", d["segment"], gt=0.0, le=float(MAX_SEGMENT_SIZE))
    if "frames" in d:
        _int("frames", d["frames"], ge=1, le=1 << 16)
    if "method" in d:
        _choice("method", d["method"], ("auto", "fx", "hooks"))
    for key in ("probe", "hints"):
        if key in d:
            _bool(key, d[key])
    _optional_str(d, "segment_input", "node", "submodule", "units")
    if "sample_rate" in d:
        _int("sample_rate", d["sample_rate"], ge=1000, le=MAX_SAMPLE_RATE, optional=True)
    inputs = d.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ConfigError(f"inputs: must map forward argument names to shapes, e.g. "
                              f"inputs='{{z:[1,1,1024],c:[1,80,8]}}', got {inputs!r}")
        for name, shape in inputs.items():
            if not isinstance(shape, list) or not shape:
                raise ConfigError(f"inputs.{name}: a shape is a list of positive integers (batch, channels, length), "
                                  f"got {shape!r}")
            for i, v in enumerate(shape):
                _int(f"inputs.{name}[{i}]", v, ge=1, le=MAX_SEGMENT_SIZE)


def validate_export(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-export`` (``recipes/export.yaml``)."""
    d = _known(cfg)
    _paths(cfg, required=("checkpoint", "out"))
    if "format" in d:
        _choice("format", d["format"], ("onnx", "checkpoint"))
    if "opset" in d:
        _int("opset", d["opset"], ge=7, le=30)
    for key in ("finalize", "check"):
        if key in d:
            _bool(key, d[key])


def _split_list(key: str, value: Any) -> list[str]:
    splits = value if isinstance(value, list) else [value]
    if not splits:
        raise ConfigError(f"{key}: must be one of {', '.join(_SPLITS)} or a list of them, got []")
    for s in splits:
        _choice(key, s, _SPLITS)
    return splits


def validate_gta(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-gta`` (``recipes/gta.yaml``)."""
    d = _known(cfg)
    _paths(cfg, required=("data_dir", "out_dir"), optional=("acoustic_checkpoint", "mel_dir", "feats_yaml"))
    if "mode" in d:
        _choice("mode", d["mode"], ("teacher_forced", "external"))
    if "split" in d:
        _split_list("split", d["split"])
    if "mel_layout" in d:
        _choice("mel_layout", d["mel_layout"], _MEL_LAYOUTS)
    if "tolerance_hops" in d:
        _float("tolerance_hops", d["tolerance_hops"], ge=0.0, le=1e6)
    for key in ("skip_bad", "progress"):
        if key in d:
            _bool(key, d[key])
    if "max_utts" in d:
        _int("max_utts", d["max_utts"], ge=1, optional=True)
    if "device" in d:
        check_device("device", d["device"])
    for key in ("data_dir", "out_dir"):  # the GTA corpus is written beside, never into, its reference
        if key not in d:
            return
    if isinstance(d["data_dir"], str) and isinstance(d["out_dir"], str) and \
            os.path.realpath(d["data_dir"]) == os.path.realpath(d["out_dir"]):
        raise ConfigError(f"out_dir: must differ from data_dir (the reference corpus), got {d['out_dir']}")


def validate_check_mels(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-check-mels`` (``recipes/check_mels.yaml``)."""
    d = _known(cfg)
    _paths(cfg, required=("vocoder",), optional=("acoustic", "mel_dir", "data_dir", "feats_yaml", "stats",
                                                 "vocoder_data_dir", "json"))
    if "split" in d:
        _choice("split", d["split"], _SPLITS)
    if "mel_layout" in d:
        _choice("mel_layout", d["mel_layout"], _MEL_LAYOUTS)


def validate_import(cfg: Mapping[str, Any]) -> None:
    """Checks of ``rfspeech-import`` (``recipes/import.yaml``)."""
    d = _known(cfg)
    # the format's name only: formats are a registry (rfspeech.inference.foreign.register_format), checked by the
    # run with the registered names in its message; importing it here would load torch before validation
    if "format" in d and (not isinstance(d["format"], str) or not d["format"]):
        raise ConfigError(f"format: must be the name of a registered checkpoint format, got {d['format']!r}")
    _paths(cfg, required=("format", "checkpoint", "config", "out"), optional=("discriminator", "stats"))


_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "train": validate_train,
    "search": validate_search,
    "train_tts": validate_train_tts,
    "prepare": validate_prepare,
    "synthesize": validate_synthesize,
    "evaluate": validate_evaluate,
    "compare": validate_compare,
    "rf": validate_rf,
    "export": validate_export,
    "gta": validate_gta,
    "check_mels": validate_check_mels,
    "import": validate_import,
}


def validator(config_name: str) -> Callable[[Mapping[str, Any]], Any] | None:
    """The checks of a console script's primary config (None when it has none here)."""
    return _VALIDATORS.get(config_name)


def validate(config_name: str, cfg: Any) -> Any:
    """Check a composed config (OmegaConf or plain) of ``config_name``; returns what its validator builds.

    Raises:
        ConfigError: ``<key>: <what is wrong>`` for the first bad value.
    """
    fn = validator(config_name)
    if fn is None:
        return None
    node = plain(cfg)
    return fn(node if isinstance(node, Mapping) else {})


# ------------------------------------------------------------------------------------------- typed runs
@dataclass(frozen=True)
class VocoderRun:
    """The typed parts of a vocoder training run (``rfspeech-train`` / ``rfspeech-search``)."""

    run: RunConfig
    loop: LoopConfig
    gan: GANConfig
    kind: ClassVar[str] = "vocoder"


def vocoder_run(cfg: Any) -> VocoderRun:
    """Validate ``recipes/train.yaml``-shaped ``cfg`` and return its typed run."""
    return VocoderRun(*validate_train(_mapping(cfg)))


def acoustic_run(cfg: Any) -> tuple[RunConfig, LoopConfig, AcousticConfig]:
    """Validate ``recipes/train_tts.yaml``-shaped ``cfg`` and return ``(run, loop, acoustic)``."""
    return validate_train_tts(_mapping(cfg))


def _mapping(cfg: Any) -> Mapping[str, Any]:
    node = plain(cfg)
    return node if isinstance(node, Mapping) else {}
