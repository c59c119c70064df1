"""The GAN vocoder trainer behind ``rfspeech-train`` and ``rfspeech-search``.

One training step, identical for every vocoder (no per-model branches):

1. generator forward on a mel segment → fake audio;
2. discriminator step: LSGAN loss on ``D([real; fake.detach()])`` (one forward on the concatenated
   batch, so DDP sees one forward per backward);
3. generator step: ``λ_adv · LSGAN + λ_fm · feature matching + λ_mel · L1(log-mel(fake), log-mel(real))
   + λ_stft · multi-resolution STFT`` (HiFi-GAN's weights 1 / 2 / 45 / 0; ParallelWaveGAN's 4 / 0 / 0 / 1).
   The loss mel uses the training features' parameters with the overrides of ``loss_mel`` (HiFi-GAN
   computes it with ``fmax=None``, i.e. up to Nyquist); it is computed and logged even at weight 0.
   The discriminator's parameters are frozen for this pass (its gradients would be thrown away).

Before ``discriminator_start_step`` (ParallelWaveGAN: 100 k) the discriminator is neither updated nor
run, and the generator trains on its non-adversarial terms alone (mel and/or STFT); the discriminator's
learning-rate schedule starts with its first update (as ParallelWaveGAN's).

Validation (rank 0, every ``validation_interval`` steps): mel L1 over whole dev utterances, audio and
mel images to TensorBoard; the best one is kept as ``checkpoints/best.pt``.

Learning-rate decay: ``lr_decay_unit="epoch"`` (default, as the official HiFi-GAN) steps the schedulers
once every ``len(train) // batch_size`` steps; ``"step"`` steps them after every step.

Batches: ``batch_size`` is the global batch over all DDP ranks (see :mod:`rfspeech.data.dataset`).

Non-finite losses: a step whose discriminator or generator loss (or gradient norm) is NaN/Inf on any
rank is skipped on every rank and counted; ``max_bad_steps`` consecutive ones stop training with
:class:`TrainingDiverged` and the last checkpoint written before them is left as it is.

The loop, checkpoint/resume plumbing, non-finite step counting and validation scheduling are shared
with the acoustic-model trainer in :class:`rfspeech.train.common.BaseTrainer`; this module adds the GAN
step, the vocoder's data and checks, and its part of the checkpoint dict.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.data.dataset import PreparedSplit, SegmentBatchSampler, SegmentDataset, collate_segments
from rfspeech.data.features import log_mel_torch
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.loading import extract_generator_state, load_checkpoint, load_generator_weights, short_error
from rfspeech.rf import analyze
from rfspeech.runconfig import GANConfig, GANOptim, LoopConfig, ModelSetup, RunConfig
from rfspeech.train import distributed as D
from rfspeech.train import losses
from rfspeech.train.common import (
    BaseTrainer,
    grad_norm,
)
from rfspeech.train.logging import log_audio, log_mel
from rfspeech.train.losses import PWG_STFT_RESOLUTIONS

log = logging.getLogger(__name__)

__all__ = ["Trainer", "check_fit", "dry_run", "preflight"]


class Trainer(BaseTrainer):
    """Train a generator and its discriminator on a prepared corpus.

    Args:
        generator: mel → waveform module (``hop_length`` / ``in_channels`` attributes are checked
            when present); already wrapped by ``make_searchable`` or built from a structure if wanted.
        discriminator: waveform → ``(logits, fmaps)`` module.
        optim: optimiser and scheduler factories of both models (:class:`~rfspeech.runconfig.GANOptim`).
        run: the run's top-level settings (:class:`~rfspeech.runconfig.RunConfig`: data_dir, out_dir, seed,
            device, amp, compile, resume, init_from, tensorboard, progress).
        loop: the training loop (:class:`~rfspeech.runconfig.LoopConfig`: batch, steps, intervals, clipping).
        settings: the GAN step (:class:`~rfspeech.runconfig.GANConfig`: segment, loss weights, STFT loss,
            discriminator start, loss mel, ...).
        feature_params: expected feature parameters; checked against ``data_dir/feats.yaml``
            (None: take them from there).
        setup: how the generator was built (:class:`~rfspeech.runconfig.ModelSetup`: structure, its mode and
            arguments, whether ``init_from`` loads the generator, searchable arguments, the local search).
        config: resolved run config (plain dict) stored in checkpoints.
        dist_info: the process's place in a torchrun job (None: read from the environment).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optim: GANOptim,
        run: RunConfig,
        loop: LoopConfig,
        settings: GANConfig,
        *,
        feature_params: FeatureParams | None = None,
        setup: ModelSetup | None = None,
        config: dict[str, Any] | None = None,
        dist_info: D.DistInfo | None = None,
    ) -> None:
        setup = setup or ModelSetup()
        lr_decay_unit, amp, resume, init_from = settings.lr_decay_unit, run.amp, run.resume, run.init_from
        if lr_decay_unit not in ("epoch", "step"):
            raise ConfigError(f"train.lr_decay_unit must be 'epoch' or 'step', got {lr_decay_unit!r}")
        if amp not in (None, "bf16", "fp16"):
            raise ConfigError(f"amp must be null, 'bf16' or 'fp16', got {amp!r}")
        super().__init__(run, loop, setup=setup, config=config, dist_info=dist_info)
        self.settings = settings
        self.segment_size = int(settings.segment_size)
        self.lr_decay_unit = lr_decay_unit
        self.lambda_adv, self.lambda_fm = float(settings.lambda_adv), float(settings.lambda_fm)
        self.lambda_mel, self.lambda_stft = float(settings.lambda_mel), float(settings.lambda_stft)
        self.stft_resolutions = _stft_resolutions(settings.stft_resolutions)
        self.discriminator_start_step = int(settings.discriminator_start_step)
        if self.discriminator_start_step < 0:
            raise ConfigError(f"train.discriminator_start_step must be >= 0, got {settings.discriminator_start_step}")
        self.n_audio_samples = int(settings.n_audio_samples)
        self.min_segment_frames = int(settings.min_segment_frames)
        self.amp = amp
        self.structure_args = dict(setup.structure_args or {})
        self.init_generator = bool(setup.init_generator)
        self.init_from = init_from

        # ---- data and its checks (all before any step) ----
        self.train_split = PreparedSplit(self.data_dir, "train", feature_params)
        self.feature_params = self.train_split.params
        if len(self.train_split) == 0:
            raise ConfigError(f"{self.data_dir / 'train' / 'utts.tsv'}: the train split is empty or missing")
        self.dev_split = PreparedSplit(self.data_dir, "dev", self.feature_params)
        self.train_data = SegmentDataset(self.train_split, self.segment_size)
        self._check_model_fits(generator)

        # ---- model, optimisers, schedulers ----
        self.generator = generator.to(self.device)
        self.discriminator = discriminator.to(self.device)
        self.optim_g = optim.optimizer_g(self.generator.parameters())
        self.optim_d = optim.optimizer_d(self.discriminator.parameters())
        self.sched_g = optim.scheduler_g(self.optim_g) if optim.scheduler_g is not None else None
        self.sched_d = optim.scheduler_d(self.optim_d) if optim.scheduler_d is not None else None
        self.loss_mel_params = _loss_mel_params(self.feature_params, settings.loss_mel)

        self._dry_run()
        if not (resume and self._resume()) and init_from:
            self._init_from(init_from)
        if self.step == 0 and self.dist.rank:
            # Different ranks draw different generator noise (WaveNet); rank 0 keeps the seeded stream.
            torch.manual_seed(self.seed * 1000 + self.dist.rank)

        # ---- wrappers (DDP, compile) used for training only; the raw modules are what is saved ----
        self.g_train = self._wrap_ddp(self.generator)
        self.d_train = self._wrap_ddp(self.discriminator)
        self._g_fwd: nn.Module | Callable[..., Any] = self.g_train
        self._d_fwd: nn.Module | Callable[..., Any] = self.d_train
        if run.compile:
            self._g_fwd = torch.compile(self.g_train)
            self._d_fwd = torch.compile(self.d_train)
        use_scaler = amp == "fp16" and self.device.type == "cuda"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

    # ------------------------------------------------------------------------------------------ checks
    @property
    def segment_frames(self) -> int:
        return self.train_data.segment_frames

    def _check_model_fits(self, generator: nn.Module) -> None:
        check_fit(generator, self.train_data, self.settings)

    def _dry_run(self) -> None:
        """One no-grad forward of both models on a segment-sized batch: shape errors surface before step 1."""
        dry_run(self.generator, self.discriminator, self.train_data, self.device)

    # ------------------------------------------------------------------------------------------ state
    def _model_state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
            "sched_g": self.sched_g.state_dict() if self.sched_g is not None else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d is not None else None,
        }

    def _structure_state(self) -> dict[str, Any]:
        return {**super()._structure_state(),
                "structure_args": self.structure_args if self.structure else None}

    def _load_model_state(self, state: dict[str, Any], where: str) -> None:
        try:
            self.generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
        except RuntimeError as e:
            raise ConfigError(f"{where}: weights do not fit the configured models ({short_error(e)})") from None
        self.optim_g.load_state_dict(state["optim_g"])
        self.optim_d.load_state_dict(state["optim_d"])
        for sched, key in ((self.sched_g, "sched_g"), (self.sched_d, "sched_d")):
            if sched is not None and state.get(key) is not None:
                sched.load_state_dict(state[key])

    def _init_from(self, path: str | Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        self._check_features(state, path)
        if self.init_generator:
            load_generator_weights(self.generator, extract_generator_state(state, path), str(path))
        disc = state.get("discriminator")
        if isinstance(disc, dict) and disc:
            try:
                self.discriminator.load_state_dict(disc)
                log.info("init_from %s: generator and discriminator weights loaded", path)
            except RuntimeError as e:
                log.warning("init_from %s: discriminator weights do not fit (%s); it starts from scratch",
                            path, short_error(e))
        else:
            log.info("init_from %s: generator weights loaded; no discriminator in the file, it starts from scratch",
                     path)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_split) // self.batch_size)

    # ------------------------------------------------------------------------------------------ step
    def _mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Loss log-mel ``(B, n_mels, frames)`` of ``(B, 1, samples)`` audio, always in float32."""
        with torch.autocast(self.device.type, enabled=False):
            return log_mel_torch(wav.float(), self.loss_mel_params)

    def train_step(self, mel: torch.Tensor, wav: torch.Tensor) -> dict[str, float] | None:
        """One discriminator (from ``discriminator_start_step`` on) and generator update on a batch.

        Args:
            mel: ``(B, n_mels, segment_frames)``.
            wav: ``(B, 1, segment_size)``.

        Returns:
            Loss values, or None when the step was (partly) skipped for a non-finite value.
        """
        mel = mel.to(self.device, non_blocking=True)
        wav = wav.to(self.device, non_blocking=True)
        n = wav.size(0)
        adversarial = self.step >= self.discriminator_start_step
        with self._autocast():
            fake = self._g_fwd(mel)
        fake = fake[..., : wav.size(-1)]
        stats: dict[str, float] = {}
        if adversarial:
            d_stats = self._discriminator_step(wav, fake.detach())
            if d_stats is None:
                return None
            stats.update(d_stats)

        # ---- generator ----
        self.optim_g.zero_grad(set_to_none=True)
        # The generator step needs no discriminator gradients: its parameters are frozen for this pass
        # (about 15 % of a step saved) and DDP, told not to sync, expects none.
        no_sync = self.d_train.no_sync() if isinstance(self.d_train, nn.parallel.DistributedDataParallel) \
            else contextlib.nullcontext()
        with no_sync, _frozen(self.discriminator):
            loss_mel = F.l1_loss(self._mel(fake), self._mel(wav))
            loss_g = self.lambda_mel * loss_mel
            stats["loss/mel"] = loss_mel.item()
            if self.lambda_stft:
                with torch.autocast(self.device.type, enabled=False):
                    sc, mag = losses.multi_resolution_stft_loss(fake.float(), wav.float(), self.stft_resolutions)
                loss_g = loss_g + self.lambda_stft * (sc + mag)
                stats.update({"loss/stft_sc": sc.item(), "loss/stft_mag": mag.item()})
            if adversarial:
                with self._autocast():
                    logits, fmaps = self._d_fwd(torch.cat([wav, fake]))
                real_f, fake_f = _halves(fmaps, n)
                _, fake_l = _halves(logits, n)
                loss_adv, _ = losses.generator_adversarial_loss(_f32(fake_l))
                loss_fm = losses.feature_matching_loss(_f32(_detach(real_f)), _f32(fake_f))
                loss_g = loss_g + self.lambda_adv * loss_adv + self.lambda_fm * loss_fm
                stats.update({"loss/gen_adv": loss_adv.item(), "loss/fm": loss_fm.item()})
            if not D.all_true(bool(torch.isfinite(loss_g)), self.dist):
                return None
            self.scaler_g.scale(loss_g).backward()
        gn_g = self._optimizer_step(self.generator, self.optim_g, self.scaler_g)
        if gn_g is None:
            return None
        stats.update({"loss/gen_total": loss_g.item(), "grad_norm/generator": gn_g})
        return stats

    def _discriminator_step(self, wav: torch.Tensor, fake: torch.Tensor) -> dict[str, float] | None:
        """One LSGAN update of the discriminator on ``[real; fake]``; None when it was non-finite (skipped)."""
        n = wav.size(0)
        self.optim_d.zero_grad(set_to_none=True)
        with self._autocast():
            logits, _ = self._d_fwd(torch.cat([wav, fake]))
        real_l, fake_l = _halves(logits, n)
        loss_d, _, _ = losses.discriminator_loss(_f32(real_l), _f32(fake_l))
        if not D.all_true(bool(torch.isfinite(loss_d)), self.dist):
            return None
        self.scaler_d.scale(loss_d).backward()
        gn_d = self._optimizer_step(self.discriminator, self.optim_d, self.scaler_d)
        if gn_d is None:
            return None
        return {"loss/disc": loss_d.item(), "grad_norm/discriminator": gn_d}

    def _optimizer_step(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler) -> float | None:
        """Unscale, clip and step after a backward pass; returns the gradient norm, or None when it was
        non-finite without loss scaling (the step is skipped; a scaler skips and backs off by itself)."""
        scaler.unscale_(optimizer)
        norm = grad_norm(module.parameters(), self.grad_clip)
        if not math.isfinite(norm) and not scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            return None
        scaler.step(optimizer)
        scaler.update()
        return norm

    # ------------------------------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        sampler = SegmentBatchSampler(self.train_split.frames, self.segment_frames, self.batch_size, self.seed,
                                      start_step=self.step, max_steps=self.max_steps, rank=self.dist.rank,
                                      world_size=self.dist.world_size)
        return self._make_loader(self.train_data, sampler, collate_segments)

    def _train_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float] | None:
        mel, wav = batch
        return self.train_step(mel, wav)

    def _train_mode(self) -> None:
        self.generator.train()
        self.discriminator.train()

    def _step_schedulers(self, stats: dict[str, float] | None) -> None:
        # The schedule follows the step count (skipped steps included), per step or per epoch. The
        # discriminator's starts with its training (as ParallelWaveGAN's): before discriminator_start_step its
        # optimiser never steps, and stepping its scheduler would decay an unused rate (and make torch warn
        # "lr_scheduler.step() before optimizer.step()"). With discriminator_start_step=0 nothing changes.
        if self.lr_decay_unit == "step" or self.step % self.steps_per_epoch == 0:
            d_trained = self.step > self.discriminator_start_step
            for sched in (self.sched_g, self.sched_d if d_trained else None):
                if sched is not None:
                    sched.step()

    def _lr_values(self) -> dict[str, float]:
        return {"lr/generator": self.optim_g.param_groups[0]["lr"],
                "lr/discriminator": self.optim_d.param_groups[0]["lr"]}

    def _progress_postfix(self, vals: dict[str, float]) -> dict[str, str]:
        return {"mel": f"{vals['loss/mel']:.3f}", "d": f"{vals.get('loss/disc', 0):.3f}"}

    def _validation_score(self, writer: Any) -> float:
        return self.validate(writer)

    @torch.no_grad()
    def validate(self, writer: Any = None) -> float:
        """Mean mel L1 over the first ``val_max_utts`` dev utterances (whole utterances, batch 1).

        Noise-driven generators draw from a validation-only RNG seeded by ``seed``, so validation
        neither depends on nor disturbs the training RNG. Returns ``nan`` without a dev split.
        """
        n = min(len(self.dev_split), self.val_max_utts)
        if n == 0:
            log.warning("no dev utterances in %s: validation skipped", self.data_dir / "dev")
            return math.nan
        self.generator.eval()
        total = 0.0
        try:
            with torch.random.fork_rng(devices=_rng_devices(self.device)):
                torch.manual_seed(self.seed)
                for i in range(n):
                    utt_id, mel, wav = self.dev_split[i]
                    mel, wav = mel.unsqueeze(0).to(self.device), wav.unsqueeze(0).to(self.device)
                    with self._autocast():
                        fake = self.generator(mel)
                    fake = fake.float()[..., : wav.size(-1)]
                    m_fake, m_real = self._mel(fake), self._mel(wav)
                    total += float(F.l1_loss(m_fake, m_real))
                    if writer is not None and i < self.n_audio_samples:
                        sr = self.feature_params.sample_rate
                        log_audio(writer, f"val/audio/{utt_id}", fake[0], sr, self.step)
                        log_mel(writer, f"val/mel/{utt_id}", m_fake[0], self.step, title=f"{utt_id} generated")
                        if self.step <= self.validation_interval:  # references once
                            log_audio(writer, f"val/audio_ref/{utt_id}", wav[0], sr, self.step)
                            log_mel(writer, f"val/mel_ref/{utt_id}", m_real[0], self.step, title=f"{utt_id} reference")
        finally:
            self.generator.train()
        val = total / n
        if writer is not None:
            writer.add_scalar("val/mel_l1", val, self.step)
        log.info("step %d: validation mel L1 %.4f", self.step, val)
        return val


# ---------------------------------------------------------------------------------------------- helpers
def _stft_resolutions(value: Sequence[Sequence[int]] | None) -> tuple[tuple[int, int, int], ...]:
    """Checked ``(fft_size, hop_size, win_length)`` triples (default ParallelWaveGAN's)."""
    if value is None:
        return PWG_STFT_RESOLUTIONS
    try:
        out = tuple((int(f), int(h), int(w)) for f, h, w in value)
    except (TypeError, ValueError):
        raise ConfigError(f"train.stft_resolutions must be a list of [fft_size, hop_size, win_length], got {value!r}") \
            from None
    bad = [r for r in out if not (0 < r[1] and 0 < r[2] <= r[0])]
    if not out or bad:
        raise ConfigError(f"train.stft_resolutions: each needs hop_size > 0 and 0 < win_length <= fft_size, got "
                          f"{list(bad or out)}")
    return out


def _loss_mel_params(features: FeatureParams, overrides: dict[str, Any] | None) -> FeatureParams:
    """The feature parameters of the loss mel: the training features with ``overrides`` (never normalised)."""
    over = {"fmax": None} if overrides is None else dict(overrides)
    try:
        return FeatureParams.from_dict({**features.to_dict(), **over, "normalize": False, "peak_normalize": False},
                                       where="train.loss_mel")
    except TypeError as e:
        raise ConfigError(f"train.loss_mel: {e}") from None


def _receptive_field(generator: nn.Module) -> tuple[float | None, float | None]:
    """``(r_min, r_max)`` of the generator in mel frames (:mod:`rfspeech.rf`), or Nones when it cannot be analysed."""
    try:
        report = analyze(generator)
        return float(report.r_min), float(report.r_max)
    except Exception as e:  # an analysis failure must not block training; the dry run still checks shapes
        log.warning("receptive-field analysis unavailable for this generator (%s)", str(e).splitlines()[0][:120])
        return None, None


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Any:
    """Turn off ``requires_grad`` of ``module``'s parameters inside the block (restored afterwards)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _halves(x: Any, n: int) -> tuple[Any, Any]:
    """Split every tensor of a nested list along the batch into ``[:n]`` and ``[n:]``."""
    if isinstance(x, torch.Tensor):
        return x[:n], x[n:]
    pairs = [_halves(v, n) for v in x]
    return [a for a, _ in pairs], [b for _, b in pairs]


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return [_detach(v) for v in x]


def _f32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float()
    return [_f32(v) for v in x]


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


# ---------------------------------------------------------------------------------------------- checks
def check_fit(generator: nn.Module, data: SegmentDataset, settings: GANConfig) -> None:
    """The generator fits the features (hop, mel bins) and the training segment (receptive field).

    Raises:
        ConfigError: a mismatch, naming the key and the file.
    """
    fp = data.split.params
    feats = data.split.data_dir / "feats.yaml"
    hop = getattr(generator, "hop_length", None)
    if hop is not None and int(hop) != fp.hop_length:
        raise ConfigError(f"generator hop_length {hop} (product of its upsampling) differs from the features' "
                          f"hop_length {fp.hop_length} in {feats}")
    n_in = getattr(generator, "in_channels", None)
    if n_in is not None and int(n_in) != fp.n_mels:
        raise ConfigError(f"generator in_channels {n_in} differs from n_mels {fp.n_mels} in {feats}")
    frames = data.segment_frames
    if frames < settings.min_segment_frames:
        raise ConfigError(f"train.segment_size={settings.segment_size} gives {frames} frames, fewer than "
                          f"train.min_segment_frames={settings.min_segment_frames}")
    r_min, r_max = _receptive_field(generator)
    if r_min is not None and frames < r_min:
        raise ConfigError(
            f"train.segment_size={settings.segment_size} ({frames} frames) is shorter than the "
            f"generator's smallest receptive field ({r_min:.1f} frames): every output sample would see padding")
    if r_max is not None and frames < r_max:
        log.warning("segment of %d frames is shorter than the generator's largest receptive field (%.1f frames)",
                    frames, r_max)


def dry_run(generator: nn.Module, discriminator: nn.Module, data: SegmentDataset, device: torch.device) -> None:
    """One no-grad forward of both models (on ``device``) on a segment-sized batch: shape errors before step 1.

    Raises:
        ConfigError: the models cannot process a segment of ``data.segment_size`` samples.
    """
    segment_size, frames = data.segment_size, data.segment_frames
    mel = torch.zeros(1, data.split.params.n_mels, frames, device=device)
    # Eval mode and a forked RNG: no side effects (spectral norm's power iteration, noise draws).
    modes = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices(device)):
            wav = generator(mel)
            if wav.shape[-1] != segment_size:
                raise ConfigError(f"generator output of {wav.shape[-1]} samples for {frames} frames; "
                                  f"expected segment_size={segment_size}")
            discriminator(wav)
    except RuntimeError as e:
        raise ConfigError(f"train.segment_size={segment_size}: the models cannot process a segment of "
                          f"this length ({(str(e).splitlines() or [''])[0][:160]})") from None
    finally:
        generator.train(modes[0])
        discriminator.train(modes[1])


def preflight(generator: nn.Module, discriminator: nn.Module, run: RunConfig, settings: GANConfig,
              feature_params: FeatureParams | None = None) -> None:
    """The checks a :class:`Trainer` makes before its first step, without building one or writing anything:
    the prepared splits and their features, the generator's fit (:func:`check_fit`) and a forward of both
    models on a segment (:func:`dry_run`, on copies on the CPU). ``rfspeech-search`` runs them before a
    global search that can last hours.

    Raises:
        ConfigError: the first problem, as the trainer would report it.
    """
    import copy

    data_dir = Path(run.data_dir)
    split = PreparedSplit(data_dir, "train", feature_params)
    if len(split) == 0:
        raise ConfigError(f"{data_dir / 'train' / 'utts.tsv'}: the train split is empty or missing")
    PreparedSplit(data_dir, "dev", split.params)
    data = SegmentDataset(split, int(settings.segment_size))
    check_fit(generator, data, settings)
    dry_run(copy.deepcopy(generator), copy.deepcopy(discriminator), data, torch.device("cpu"))
