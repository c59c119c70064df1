"""Trainer of the conv acoustic model (text → mel) behind ``rfspeech-train-tts``.

One training step: the model's own forward (MAS alignment, teacher-forced decoding) returns
``loss/mel`` (L1), ``loss/duration`` (log-duration MSE) and ``loss/prior`` (Gaussian prior of the
alignment) and their weighted sum; one optimiser step on the sum; the scheduler steps after every
update (a step skipped for a non-finite loss does not advance it).

Shares the vocoder trainer's machinery: the loop, resume and checkpoint plumbing, non-finite step
skipping and validation scheduling of :class:`rfspeech.train.common.BaseTrainer`, atomic checkpoints
with keep-last-K and fallback past a corrupted newest file (:mod:`rfspeech.train.checkpoint`),
TensorBoard helpers (:mod:`rfspeech.train.logging`), torchrun / DDP plumbing
(:mod:`rfspeech.train.distributed`), a batch sampler that is a pure function of ``(seed, step)``
so ``resume=true`` continues exactly, ``batch_size`` as the global batch, and the receptive-field
search hooks (``make_searchable`` + ``LocalSearch``) of :mod:`rfspeech.search`.

Checkpoint dict (``<out_dir>/checkpoints/ckpt_<step:08d>.pt``, ``best.pt``)::

    kind="acoustic", acoustic (state dict), optim, sched, step, epoch, rng, search, searchable,
    config (resolved, with model.acoustic), feature_params, structure, structure_mode, best_val, bad_steps

:func:`rfspeech.inference.load_acoustic` rebuilds a ready-to-synthesise model from such a file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.data.manifest import FEATS_YAML, MANIFEST, FeatureParams
from rfspeech.data.text_dataset import TextMelBatchSampler, TextMelDataset, collate_text_mel
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.loading import build_config_node, load_checkpoint, short_error
from rfspeech.runconfig import AcousticConfig, LoopConfig, ModelSetup, Optim, RunConfig
from rfspeech.search import export_structure
from rfspeech.train import checkpoint as ckpt
from rfspeech.train import distributed as D
from rfspeech.train.common import (
    BaseTrainer,
    grad_norm,
)
from rfspeech.train.logging import log_dilations, log_mel, log_scalars

log = logging.getLogger(__name__)

__all__ = ["KIND", "LOSS_KEYS", "AcousticTrainer", "WarmupLambda", "build_acoustic", "load_latest_acoustic",
           "warmup_lr"]

KIND = "acoustic"
LOSS_KEYS = ("loss/mel", "loss/duration", "loss/prior")


class WarmupLambda:
    """Learning-rate factor: linear warm-up over ``warmup_steps``, then constant or ``1/sqrt`` decay.

    A callable object (not a lambda) so ``LambdaLR.state_dict`` carries it into checkpoints.
    """

    def __init__(self, warmup_steps: int = 4000, decay: str = "inv_sqrt") -> None:
        if decay not in ("none", "inv_sqrt"):
            raise ConfigError(f"scheduler decay must be 'none' or 'inv_sqrt', got {decay!r}")
        self.warmup_steps = max(0, int(warmup_steps))
        self.decay = decay

    def __call__(self, step: int) -> float:
        s = step + 1
        w = self.warmup_steps
        if w and s < w:
            return s / w
        if self.decay == "inv_sqrt" and w:
            return math.sqrt(w / s)
        return 1.0


def warmup_lr(optimizer: torch.optim.Optimizer, warmup_steps: int = 4000,
              decay: str = "inv_sqrt") -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then ``1/sqrt(step)`` decay (``decay="none"``: constant), stepped every step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLambda(warmup_steps, decay))


class AcousticTrainer(BaseTrainer):
    """Train an :class:`rfspeech.models.acoustic.AcousticModel` on a prepared corpus.

    Args:
        model: the acoustic model (already wrapped by ``make_searchable`` or built from a structure if wanted).
        optim: optimiser and scheduler (stepped every step) factories (:class:`~rfspeech.runconfig.Optim`).
        run: the run's top-level settings (:class:`~rfspeech.runconfig.RunConfig`; ``amp``: None or ``"bf16"``,
            autocast on CUDA).
        loop: the training loop (:class:`~rfspeech.runconfig.LoopConfig`).
        settings: the acoustic model's data options (:class:`~rfspeech.runconfig.AcousticConfig`: n_mel_images,
            max_frames, bucket_batches, skip_bad).
        feature_params: expected feature parameters, checked against ``feats.yaml`` (None: take them).
        setup: structure the model was built with, searchable arguments, the local search
            (:class:`~rfspeech.runconfig.ModelSetup`).
        config: resolved run config stored in checkpoints (must hold ``model.acoustic`` for loading).
        dist_info: the process's place in a torchrun job (None: from the environment).

    ``fit`` reports the best and last teacher-forced validation mel L1 in its :class:`TrainResult`.
    """

    section = "tts"
    progress_desc = "train-tts"
    model_key = "acoustic"
    checkpoint_what = "an acoustic-model checkpoint"
    resume_keys = ("acoustic", "optim", "step", "rng")

    def __init__(
        self,
        model: nn.Module,
        optim: Optim,
        run: RunConfig,
        loop: LoopConfig,
        settings: AcousticConfig,
        *,
        feature_params: FeatureParams | None = None,
        setup: ModelSetup | None = None,
        config: dict[str, Any] | None = None,
        dist_info: D.DistInfo | None = None,
    ) -> None:
        amp, max_frames, skip_bad = run.amp, settings.max_frames, settings.skip_bad
        if amp not in (None, "bf16"):
            raise ConfigError(f"amp must be null or 'bf16' for the acoustic model, got {amp!r}")
        super().__init__(run, loop, setup=setup, config=config, dist_info=dist_info)
        self.settings = settings
        n_mel_images, bucket_batches = settings.n_mel_images, settings.bucket_batches
        self.n_mel_images = int(n_mel_images)
        self.bucket_batches = int(bucket_batches)
        self.amp = amp if self.device.type == "cuda" else None

        # ---- data and its checks, all before the first step ----
        symbol_set = str(getattr(model, "symbol_set", "chars"))
        self.train_data = TextMelDataset(self.data_dir, "train", feature_params, symbol_set=symbol_set,
                                         max_frames=max_frames, skip_bad=skip_bad)
        self.feature_params = self.train_data.params
        self.dev_data: TextMelDataset | None = None
        if (self.data_dir / "dev" / MANIFEST).is_file():
            try:
                self.dev_data = TextMelDataset(self.data_dir, "dev", self.feature_params, symbol_set=symbol_set,
                                               skip_bad=skip_bad)
            except ConfigError as e:  # an empty dev split only disables validation
                log.warning("validation disabled: %s", e)
        self._check_model_fits(model)

        self.model = model.to(self.device)
        self.optim = optim.optimizer(self.model.parameters())
        self.sched = optim.scheduler(self.optim) if optim.scheduler is not None else None
        if not (run.resume and self._resume()) and run.init_from:
            self._init_from(run.init_from)

        self.model_train = self._wrap_ddp(self.model)

    # ------------------------------------------------------------------------------------------ checks
    def _check_model_fits(self, model: nn.Module) -> None:
        feats = self.data_dir / FEATS_YAML
        n_mels = getattr(model, "n_mels", None)
        if n_mels is not None and int(n_mels) != self.feature_params.n_mels:
            raise ConfigError(f"acoustic model n_mels={n_mels} differs from n_mels={self.feature_params.n_mels} "
                              f"of the features in {feats}")
        n_symbols = getattr(model, "n_symbols", None)
        top = max(int(t.max()) for t in self.train_data.tokens)
        if n_symbols is not None and top >= int(n_symbols):
            raise ConfigError(f"acoustic model n_symbols={n_symbols} is too small for symbol id {top} of the text")

    # ------------------------------------------------------------------------------------------ state
    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_data) // self.batch_size)

    def _model_state(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "acoustic": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "sched": self.sched.state_dict() if self.sched is not None else None,
        }

    def _load_model_state(self, state: dict[str, Any], where: str) -> None:
        try:
            self.model.load_state_dict(state["acoustic"])
        except RuntimeError as e:
            raise ConfigError(f"{where}: weights do not fit the configured acoustic model ({short_error(e)})") from None
        self.optim.load_state_dict(state["optim"])
        if self.sched is not None and state.get("sched") is not None:
            self.sched.load_state_dict(state["sched"])

    def _init_from(self, path: str | Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        sd = state.get("acoustic")
        if not isinstance(sd, dict) or not sd:
            raise DataError(f"{path}: no acoustic model weights (expected an 'acoustic' entry)")
        self._check_features(state, path)
        try:
            self.model.load_state_dict(sd)
        except RuntimeError as e:
            raise ConfigError(f"{path}: weights do not fit the configured acoustic model ({short_error(e)})") from None
        log.info("init_from %s: acoustic model weights loaded", path)

    # ------------------------------------------------------------------------------------------ step
    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return tuple(batch[k].to(self.device, non_blocking=True)
                     for k in ("tokens", "token_lengths", "mels", "mel_lengths"))

    def train_step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        """One optimiser step on a collated batch; None when skipped for a non-finite loss or gradient."""
        tokens, token_lengths, mels, mel_lengths = self._to_device(batch)
        self.optim.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model_train(tokens, token_lengths, mels, mel_lengths)
        loss = out["loss"].float()
        if not D.all_true(bool(torch.isfinite(loss)), self.dist):
            return None
        loss.backward()
        gn = grad_norm(self.model.parameters(), self.grad_clip)
        if not D.all_true(math.isfinite(gn), self.dist):
            self.optim.zero_grad(set_to_none=True)
            return None
        self.optim.step()
        stats = {k: float(out[k].detach()) for k in LOSS_KEYS}
        stats["loss/total"] = float(loss.detach())
        stats["grad_norm/acoustic"] = gn
        return stats

    # ------------------------------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        sampler = TextMelBatchSampler(self.train_data.frames, self.batch_size, self.seed, start_step=self.step,
                                      max_steps=self.max_steps, rank=self.dist.rank,
                                      world_size=self.dist.world_size, bucket_batches=self.bucket_batches)
        return self._make_loader(self.train_data, sampler, collate_text_mel)

    def _train_batch(self, batch: dict[str, Any]) -> dict[str, float] | None:
        return self.train_step(batch)

    def _train_mode(self) -> None:
        self.model.train()

    def _step_schedulers(self, stats: dict[str, float] | None) -> None:
        if self.sched is not None and stats is not None:  # the schedule counts real updates
            self.sched.step()

    def _lr_values(self) -> dict[str, float]:
        return {"lr/acoustic": self.optim.param_groups[0]["lr"]}

    def _progress_postfix(self, vals: dict[str, float]) -> dict[str, str]:
        return {"mel": f"{vals['loss/mel']:.3f}", "dur": f"{vals['loss/duration']:.3f}",
                "prior": f"{vals['loss/prior']:.3f}"}

    def _on_structure_change(self, writer: Any) -> None:
        self._log_structure(writer)

    def _validation_score(self, writer: Any) -> float:
        return self.validate(writer).get("val/mel_l1", math.nan)

    def _log_structure(self, writer: Any) -> None:
        if not self.dist.is_main:
            return
        structure = export_structure(self.model)
        log_dilations(writer, structure, self.step)
        log.info("step %d: searched dilations %s", self.step, structure)

    @torch.no_grad()
    def validate(self, writer: Any = None) -> dict[str, float]:
        """Teacher-forced losses and duration error on the first ``val_max_utts`` dev utterances.

        Returns ``val/mel_l1`` (teacher-forced decoder L1), ``val/duration``, ``val/prior``,
        ``val/duration_mae_frames`` (predicted vs MAS durations, frames per token) and
        ``val/length_ratio`` (predicted / true utterance length); empty without a dev split.
        """
        data = self.dev_data
        n = min(len(data), self.val_max_utts) if data is not None else 0
        if data is None or n == 0:
            return {}
        self.model.eval()
        sums = {"val/mel_l1": 0.0, "val/duration": 0.0, "val/prior": 0.0, "val/duration_mae_frames": 0.0,
                "val/length_ratio": 0.0}
        try:
            for i in range(n):
                batch = collate_text_mel([data[i]])
                tokens, token_lengths, mels, mel_lengths = self._to_device(batch)
                out = self.model(tokens, token_lengths, mels, mel_lengths)
                true_d = out["durations"][0].float()
                _, _, log_dur, x_mask = self.model.encode(tokens, token_lengths)
                pred_d = self.model.predict_durations(log_dur, x_mask)[0].float()
                sums["val/mel_l1"] += float(out["loss/mel"])
                sums["val/duration"] += float(out["loss/duration"])
                sums["val/prior"] += float(out["loss/prior"])
                sums["val/duration_mae_frames"] += float((pred_d - true_d).abs().mean())
                sums["val/length_ratio"] += float(pred_d.sum() / true_d.sum())
                if writer is not None and i < self.n_mel_images:
                    utt = batch["utt_ids"][0]
                    pred = self.model.inference(tokens)
                    log_mel(writer, f"val/mel/{utt}", pred[0], self.step, title=f"{utt} predicted")
                    log_mel(writer, f"val/mel_teacher_forced/{utt}", out["mel_pred"][0], self.step,
                            title=f"{utt} teacher-forced")
                    if self.step <= max(self.validation_interval, 1):
                        log_mel(writer, f"val/mel_ref/{utt}", mels[0], self.step, title=f"{utt} reference")
        finally:
            self.model.train()
        vals = {k: v / n for k, v in sums.items()}
        if writer is not None:
            log_scalars(writer, vals, self.step)
        log.info("step %d: validation mel L1 %.4f, duration MAE %.2f frames", self.step, vals["val/mel_l1"],
                 vals["val/duration_mae_frames"])
        return vals


# ---------------------------------------------------------------------------------------------- loading
def load_latest_acoustic(out_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable acoustic checkpoint of a run; unreadable newer ones are skipped with a warning."""
    return ckpt.load_latest(out_dir, map_location="cpu", model_key="acoustic", what="an acoustic-model checkpoint")


def build_acoustic(node: Any) -> nn.Module:
    """Build a ``model.acoustic`` config node (``_target_`` + arguments): allow-listed and typed, errors made clear."""
    return build_config_node(node, "model.acoustic")
