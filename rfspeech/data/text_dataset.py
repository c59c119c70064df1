"""Training data for the acoustic model: (symbol ids, log-mel) pairs of a prepared split, padded batches.

Reads what ``rfspeech-prepare`` writes (see :mod:`rfspeech.data.manifest`): ``<split>/utts.tsv`` for the
text and ``<split>/feats/<utt_id>.npy`` (float32 ``(n_mels, frames)``) for the target, with the
feature parameters of ``feats.yaml`` beside them.

Batching (:class:`TextMelBatchSampler`) is a pure function of ``(seed, step)``, as for the vocoders:
a resumed run draws exactly the batches an uninterrupted one would, and a DDP job draws one global
batch per step and splits it by rank (``batch_size`` is the global batch). Within an epoch,
utterances are grouped into buckets of similar length so padding stays small.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rfspeech.data.dataset import StepBatchSampler, feats_frames, feats_path, load_corpus_params
from rfspeech.data.manifest import MANIFEST, FeatureParams, Utterance, read_manifest
from rfspeech.data.npy import load_features
from rfspeech.data.text import PAD_ID, text_to_sequence
from rfspeech.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class TextMelDataset(Dataset):
    """Utterances of one prepared split as ``(utt_id, tokens, mel)``.

    Every utterance is checked when the dataset is built (text speakable, features present with
    ``n_mels`` bins, at least as many frames as symbols, since the alignment needs one frame per
    symbol), so a bad file fails before the first training step.

    Args:
        data_dir: prepared corpus directory (``feats.yaml``, ``<split>/utts.tsv``, ``<split>/feats/``).
        split: ``train``, ``dev`` or ``eval``.
        feature_params: the parameters the model expects; compared with ``feats.yaml`` (clear error on
            any difference). ``None`` takes them from ``feats.yaml``.
        symbol_set: text symbols (``"chars"`` or ``"phonemes"``).
        add_eos: append the end-of-sentence symbol.
        max_frames: drop utterances longer than this many frames (``None``: keep all).
        skip_bad: skip (and log) unusable utterances instead of raising.

    Items:
        ``(utt_id, tokens (T_text,) long, mel (n_mels, T_mel) float32)``.

    Raises:
        DataError: missing ``feats.yaml`` / manifest / features, unspeakable text, wrong mel shape, or
            an utterance with fewer frames than symbols (unless ``skip_bad``).
        ConfigError: feature parameters differ from ``feature_params``, or nothing is left.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        feature_params: FeatureParams | None = None,
        symbol_set: str = "chars",
        add_eos: bool = True,
        max_frames: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.params = load_corpus_params(self.data_dir, feature_params)
        self.symbol_set = symbol_set
        manifest = self.data_dir / split / MANIFEST
        utts = read_manifest(manifest)
        self.utts: list[Utterance] = []
        self.tokens: list[np.ndarray] = []
        self.frames: list[int] = []
        self.skipped: list[tuple[str, str]] = []
        for u in utts:
            try:
                tokens, frames = self._check(u, manifest, add_eos)
            except DataError as e:
                if not skip_bad:
                    raise
                self.skipped.append((u.utt_id, str(e)))
                log.warning("skipping %s", e)
                continue
            if max_frames is not None and frames > max_frames:
                self.skipped.append((u.utt_id, f"{frames} frames > max_frames={max_frames}"))
                continue
            self.utts.append(u)
            self.tokens.append(tokens)
            self.frames.append(frames)
        if not self.utts:
            raise ConfigError(f"{manifest}: no usable utterances in the {split} split"
                              + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))

    def feats_path(self, utt_id: str) -> Path:
        return feats_path(self.data_dir, self.split, utt_id)

    def _check(self, u: Utterance, manifest: Path, add_eos: bool) -> tuple[np.ndarray, int]:
        if not u.text.strip():
            raise DataError(f"{manifest}: utterance {u.utt_id} has no text")
        try:
            tokens = np.asarray(text_to_sequence(u.text, symbol_set=self.symbol_set, add_eos=add_eos), np.int64)
        except DataError as e:
            raise DataError(f"{manifest}: utterance {u.utt_id}: {e}") from None
        path = self.feats_path(u.utt_id)
        frames = feats_frames(path, u.utt_id, self.params.n_mels)
        if frames < len(tokens):
            raise DataError(f"{path}: {frames} frames for {len(tokens)} symbols of {u.utt_id}; "
                            "the alignment needs at least one frame per symbol")
        return tokens, frames

    def __len__(self) -> int:
        return len(self.utts)

    def load_mel(self, index: int) -> np.ndarray:
        path = self.feats_path(self.utts[index].utt_id)
        mel = load_features(path, self.params.n_mels)  # header checked first (size, real float dtype)
        if not np.isfinite(mel).all():
            raise DataError(f"{path}: features contain NaN or Inf")
        return mel

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return (self.utts[index].utt_id, torch.from_numpy(self.tokens[index].copy()),
                torch.from_numpy(np.ascontiguousarray(self.load_mel(index))))


def collate_text_mel(items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> dict[str, object]:
    """Pad a list of dataset items into a batch.

    Returns:
        ``tokens (B, T_text)`` long, 0-padded; ``token_lengths (B,)``; ``mels (B, n_mels, T_mel)``
        zero-padded; ``mel_lengths (B,)``; ``utt_ids`` list.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    ids, tokens, mels = zip(*items)
    token_lengths = torch.tensor([t.shape[0] for t in tokens], dtype=torch.long)
    mel_lengths = torch.tensor([m.shape[1] for m in mels], dtype=torch.long)
    tok = torch.full((len(items), int(token_lengths.max())), PAD_ID, dtype=torch.long)
    mel = torch.zeros(len(items), mels[0].shape[0], int(mel_lengths.max()), dtype=torch.float32)
    for i, (t, m) in enumerate(zip(tokens, mels)):
        tok[i, :t.shape[0]] = t
        mel[i, :, :m.shape[1]] = m
    return {"utt_ids": list(ids), "tokens": tok, "token_lengths": token_lengths, "mels": mel,
            "mel_lengths": mel_lengths}


class TextMelBatchSampler(StepBatchSampler[int]):
    """Length-bucketed batches of utterance indices, a pure function of ``(seed, step)``.

    Epoch ``e`` permutes the utterances with a generator seeded by ``(seed, e)`` (repeating the
    permutation when the split holds fewer utterances than a batch), cuts the permutation into
    buckets of ``bucket_batches`` global batches, sorts each bucket by length, cuts it into batches
    and shuffles the batches of the bucket. Each rank yields its contiguous share of the global batch.

    Args:
        lengths: frame count of every utterance.
        batch_size: global batch size (a multiple of ``world_size``).
        seed: sampling seed.
        start_step: completed steps before the first batch (the first batch is for step ``start_step + 1``).
        max_steps: last step to yield a batch for.
        rank: this process's rank.
        world_size: number of processes.
        bucket_batches: batches per length bucket (1 = no bucketing).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, start_step: int, max_steps: int,
                 rank: int = 0, world_size: int = 1, bucket_batches: int = 8) -> None:
        super().__init__(lengths, batch_size, seed, start_step, max_steps, rank=rank, world_size=world_size)
        self.bucket_batches = max(1, int(bucket_batches))
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        bs = self.batch_size
        order = self._epoch_order(epoch)
        need = len(order)
        rng = np.random.default_rng([self.seed, 1, epoch])
        batches: list[np.ndarray] = []
        span = bs * self.bucket_batches
        for start in range(0, need, span):
            bucket = order[start:start + span]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            chunk = [bucket[i:i + bs] for i in range(0, len(bucket), bs)]
            batches.extend(chunk[i] for i in rng.permutation(len(chunk)))
        self._cache = (epoch, batches)
        return batches

    def global_batch(self, step: int) -> list[int]:
        """The whole batch (all ranks) of step ``step`` (1-based)."""
        epoch, pos = divmod(step - 1, self.steps_per_epoch)
        return [int(i) for i in self._epoch_batches(epoch)[pos]]
