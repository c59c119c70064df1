"""Training data for vocoders: random (mel, audio) segments of prepared utterances.

Sampling is a pure function of ``(seed, step)`` (:class:`SegmentBatchSampler`), not of a DataLoader's
RNG, so a resumed run draws exactly the batches an uninterrupted one would, whatever the number of
workers, and a DDP job draws the same global batch as a single process and splits it by rank.

Batch semantics: ``batch_size`` is the **global** batch (summed over all ranks). It stays the same
when the number of GPUs changes; each rank gets ``batch_size // world_size`` items (the division
must be exact). The learning rate therefore needs no rescaling when scaling out, and an epoch
(``len(train) // batch_size`` steps) means the same thing on 1 or N GPUs.

Alignment: mel frame ``t`` covers audio samples ``[t·hop, (t+1)·hop)``; the audio is zero-padded or
cut to ``frames · hop`` samples. A segment of ``segment_size`` samples (a multiple of ``hop``) starts at
a frame boundary. Utterances shorter than a segment are padded: audio with zeros, the log-mel with its
per-band minimum (the silence level of that utterance).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rfspeech.data.ids import utt_path
from rfspeech.data.manifest import FEATS_YAML, MANIFEST, FeatureParams, Utterance, read_manifest
from rfspeech.data.npy import check_features_header, load_features
from rfspeech.errors import ConfigError, DataError

_Item = TypeVar("_Item")


def read_audio(path: str | Path, sample_rate: int, peak_normalize: bool) -> np.ndarray:
    """Read mono float32 audio at ``sample_rate``, peak-normalised as the features were.

    Raises:
        DataError: unreadable file or a sample rate other than ``sample_rate``.
    """
    from rfspeech.data.audio import read_audio as _read
    from rfspeech.data.features import peak_normalize as _peak

    wav, _ = _read(path, expected_sr=sample_rate)
    return _peak(wav) if peak_normalize else wav


def feats_path(data_dir: Path, split: str, utt_id: str) -> Path:
    return utt_path(data_dir / split / "feats", utt_id, ".npy")


def load_corpus_params(data_dir: Path, feature_params: FeatureParams | None) -> FeatureParams:
    """The feature parameters of a prepared corpus (``feats.yaml``), checked against the expected ones.

    Args:
        data_dir: prepared corpus directory.
        feature_params: the parameters the model expects, or None to take those on disk.

    Returns:
        The parameters of ``feats.yaml``.

    Raises:
        ConfigError: ``feature_params`` differ from ``feats.yaml``.
    """
    on_disk = FeatureParams.load(data_dir / FEATS_YAML)
    if feature_params is not None:
        feature_params.check_matches(on_disk, "the training config (features)", str(data_dir / FEATS_YAML))
    return on_disk


def feats_frames(path: Path, utt_id: str, n_mels: int) -> int:
    """Frame count of a prepared features file, read from its ``.npy`` header (not the data).

    Args:
        path: the ``<split>/feats/<utt_id>.npy`` file.
        utt_id: its utterance (for messages).
        n_mels: expected mel bins.

    Raises:
        DataError: the file is missing, unreadable or not ``(n_mels, frames)``.
    """
    if not path.is_file():
        raise DataError(f"{path}: features of {utt_id} missing (run rfspeech-prepare with features)")
    return int(check_features_header(path, n_mels).shape[1])


class PreparedSplit(Dataset):
    """Whole utterances of one split of a prepared corpus (``rfspeech-prepare`` output).

    Args:
        data_dir: prepared corpus directory (holds ``feats.yaml`` and ``<split>/utts.tsv``).
        split: ``train``, ``dev`` or ``eval``.
        feature_params: expected parameters; ``None`` takes them from ``feats.yaml``.

    Items are ``(utt_id, mel (n_mels, T) float32, wav (1, T·hop) float32)``.
    """

    def __init__(self, data_dir: str | Path, split: str, feature_params: FeatureParams | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.params = load_corpus_params(self.data_dir, feature_params)
        manifest = self.data_dir / split / MANIFEST
        self.utts: list[Utterance] = read_manifest(manifest) if manifest.is_file() else []
        # Before any step: a missing audio file would otherwise surface at the first batch that draws it.
        for line, u in enumerate(self.utts, start=2):
            if not Path(u.audio).is_file():
                raise DataError(f"{manifest}:{line}: audio of {u.utt_id!r} not found ({u.audio})")
        self._frames: list[int] | None = None

    def __len__(self) -> int:
        return len(self.utts)

    @property
    def hop(self) -> int:
        return self.params.hop_length

    @property
    def frames(self) -> list[int]:
        """Frame count of every utterance (read from the .npy headers, not the data)."""
        if self._frames is None:
            self._frames = [feats_frames(feats_path(self.data_dir, self.split, u.utt_id), u.utt_id,
                                         self.params.n_mels) for u in self.utts]
        return self._frames

    def load_mel(self, index: int) -> np.ndarray:
        u = self.utts[index]
        return load_features(feats_path(self.data_dir, self.split, u.utt_id), self.params.n_mels)

    def load_wav(self, index: int, frames: int) -> np.ndarray:
        """Audio of utterance ``index``, zero-padded or cut to ``frames · hop`` samples."""
        wav = read_audio(self.utts[index].audio, self.params.sample_rate, self.params.peak_normalize)
        n = frames * self.hop
        if wav.shape[0] < n:
            wav = np.pad(wav, (0, n - wav.shape[0]))
        return wav[:n]

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        mel = self.load_mel(index)
        wav = self.load_wav(index, mel.shape[1])
        return self.utts[index].utt_id, torch.from_numpy(mel), torch.from_numpy(wav).unsqueeze(0)


class SegmentDataset(Dataset):
    """Fixed-length (mel, audio) segments; indexed by ``(utterance index, start frame)`` pairs.

    Args:
        split: the prepared split to cut from.
        segment_size: segment length in samples (a multiple of the hop length).

    Items are ``(mel (n_mels, segment_size/hop), wav (1, segment_size))``, float32.
    """

    def __init__(self, split: PreparedSplit, segment_size: int) -> None:
        hop = split.hop
        if segment_size <= 0 or segment_size % hop:
            raise ConfigError(f"train.segment_size={segment_size} must be a positive multiple of the hop length {hop}")
        self.split = split
        self.segment_size = int(segment_size)
        self.segment_frames = self.segment_size // hop

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, start = key
        mel = self.split.load_mel(index)
        frames = mel.shape[1]
        wav = self.split.load_wav(index, frames)
        f = self.segment_frames
        hop = self.split.hop
        mel = mel[:, start:start + f]
        wav = wav[start * hop:(start + f) * hop]
        if mel.shape[1] < f:  # short utterance: pad to the segment with silence
            floor = mel.min(axis=1, keepdims=True) if mel.shape[1] else np.zeros((mel.shape[0], 1), np.float32)
            mel = np.concatenate([mel, np.repeat(floor, f - mel.shape[1], axis=1)], axis=1)
            wav = np.pad(wav, (0, self.segment_size - wav.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(mel)), torch.from_numpy(np.ascontiguousarray(wav)).unsqueeze(0)


def collate_segments(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    mels, wavs = zip(*items)
    return torch.stack(mels), torch.stack(wavs)


class StepBatchSampler(Sampler[list[_Item]]):
    """Base of the batch samplers that are a pure function of ``(seed, step)``.

    Yields this rank's share of the global batch of every step from ``start_step + 1`` to
    ``max_steps``; a subclass says what a step's global batch is (:meth:`global_batch`), usually from
    the epoch's utterance order (:meth:`_epoch_order`).

    Args:
        lengths: frame count of every utterance.
        batch_size: global batch size (a multiple of ``world_size``).
        seed: sampling seed.
        start_step: completed steps before the first batch (the first batch is for step ``start_step + 1``).
        max_steps: last step to yield a batch for.
        rank: this process's rank.
        world_size: number of processes.
    """

    #: What the sampler draws, for the message about an empty split.
    draws: ClassVar[str] = "batches"

    def __init__(self, lengths: list[int], batch_size: int, seed: int, start_step: int, max_steps: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if not lengths:
            raise ConfigError(f"the train split is empty: nothing to sample {self.draws} from")
        if batch_size <= 0 or batch_size % world_size:
            raise ConfigError(
                f"train.batch_size={batch_size} (the global batch) must be a positive multiple of the "
                f"number of processes ({world_size})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_step = int(start_step)
        self.max_steps = int(max_steps)
        self.rank = int(rank)
        self.world_size = int(world_size)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.lengths) // self.batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Utterance indices of epoch ``epoch``: ``steps_per_epoch`` global batches, in order.

        A permutation seeded by ``(seed, epoch)``, repeated (with further seeds) when the split holds
        fewer utterances than a batch.
        """
        n = len(self.lengths)
        need = self.steps_per_epoch * self.batch_size
        parts, r = [], 0
        while sum(len(p) for p in parts) < need:
            parts.append(np.random.default_rng([self.seed, 0, epoch, r]).permutation(n))
            r += 1
        return np.concatenate(parts)[:need]

    def global_batch(self, step: int) -> list[_Item]:
        """The whole batch (all ranks) of step ``step`` (1-based)."""
        raise NotImplementedError

    def batch(self, step: int) -> list[_Item]:
        """This rank's share of step ``step``'s global batch."""
        per = self.batch_size // self.world_size
        return self.global_batch(step)[self.rank * per:(self.rank + 1) * per]

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def __iter__(self) -> Iterator[list[_Item]]:
        for step in range(self.start_step + 1, self.max_steps + 1):
            yield self.batch(step)


class SegmentBatchSampler(StepBatchSampler[tuple[int, int]]):
    """Batches of ``(utterance, start frame)`` drawn as a pure function of ``(seed, step)``.

    Epoch ``e`` visits the utterances in a permutation seeded by ``(seed, e)`` (repeated when the
    split holds fewer utterances than a batch); the start frames of step ``k``'s items are seeded by
    ``(seed, k)``. Each rank yields its contiguous share of the global batch.

    Args:
        frames: frame count of every utterance.
        segment_frames: segment length in frames.
        batch_size: global batch size.
        seed: sampling seed.
        start_step: completed steps before the first batch (the first batch is for step ``start_step + 1``).
        max_steps: last step to yield a batch for.
        rank: this process's rank.
        world_size: number of processes.
    """

    draws = "segments"

    def __init__(self, frames: list[int], segment_frames: int, batch_size: int, seed: int, start_step: int,
                 max_steps: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(frames, batch_size, seed, start_step, max_steps, rank=rank, world_size=world_size)
        self.segment_frames = int(segment_frames)

    @property
    def frames(self) -> np.ndarray:
        """Frame count of every utterance (the sampler's ``lengths``)."""
        return self.lengths

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """The whole batch (all ranks) used to compute step ``step`` (1-based)."""
        k = step - 1
        epoch, pos = divmod(k, self.steps_per_epoch)
        idx = self._epoch_order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]
        room = np.maximum(self.frames[idx] - self.segment_frames, 0)
        u = np.random.default_rng([self.seed, 1, k]).random(len(idx))
        starts = np.floor(u * (room + 1)).astype(np.int64)
        return [(int(i), int(s)) for i, s in zip(idx, starts)]
