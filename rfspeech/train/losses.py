"""Vocoder losses: least-squares GAN + feature matching (HiFi-GAN), multi-resolution STFT (ParallelWaveGAN).

Every GAN function takes the discriminator outputs as the models return them
(``logits: list[Tensor]``, ``fmaps: list[list[Tensor]]``, one entry per sub-discriminator), so
the same code trains HiFi-GAN's MPD+MSD and ParallelWaveGAN's single discriminator.
HiFi-GAN's weights are :data:`LAMBDA_FM` (×2) and :data:`LAMBDA_MEL` (×45); ParallelWaveGAN trains
its generator with :func:`multi_resolution_stft_loss` alone, then adds the adversarial loss ×4 once
the discriminator starts (the trainer's ``loss_weights`` and ``discriminator_start_step``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rfspeech.spectral import STFT_RESOLUTIONS

__all__ = [
    "LAMBDA_FM",
    "LAMBDA_MEL",
    "LOSS_WEIGHTS",
    "PWG_STFT_RESOLUTIONS",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "mel_l1_loss",
    "multi_resolution_stft_loss",
]

#: Weight of the feature-matching loss in HiFi-GAN's generator objective.
LAMBDA_FM = 2.0
#: Weight of the mel-spectrogram L1 loss in HiFi-GAN's generator objective.
LAMBDA_MEL = 45.0
#: The trainer's ``loss_weights`` keys and their defaults (HiFi-GAN's objective).
LOSS_WEIGHTS: dict[str, float] = {"adv": 1.0, "fm": LAMBDA_FM, "mel": LAMBDA_MEL, "stft": 0.0}


def discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Least-squares discriminator loss ``Σ_k E[(1 − D_k(x))²] + E[D_k(G(s))²]``.

    Args:
        real_logits: per sub-discriminator, outputs on real audio (any shape).
        fake_logits: the same on generated audio (detached by the caller).

    Returns:
        ``(total, real_terms, fake_terms)``; the per-discriminator terms are for logging.
    """
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError(f"expected equal, non-zero numbers of logits, got {len(real_logits)} and {len(fake_logits)}")
    real_terms = [torch.mean((1.0 - r) ** 2) for r in real_logits]
    fake_terms = [torch.mean(f**2) for f in fake_logits]
    total = torch.stack(real_terms).sum() + torch.stack(fake_terms).sum()
    return total, real_terms, fake_terms


def generator_adversarial_loss(fake_logits: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares generator loss ``Σ_k E[(1 − D_k(G(s)))²]``.

    Args:
        fake_logits: per sub-discriminator, outputs on generated audio.

    Returns:
        ``(total, terms)``.
    """
    if not fake_logits:
        raise ValueError("expected at least one discriminator output")
    terms = [torch.mean((1.0 - f) ** 2) for f in fake_logits]
    return torch.stack(terms).sum(), terms


def feature_matching_loss(
    real_fmaps: Sequence[Sequence[torch.Tensor]], fake_fmaps: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching ``Σ_k Σ_i E|D_k^i(x) − D_k^i(G(s))|`` (unweighted; multiply by :data:`LAMBDA_FM`).

    Real feature maps are detached here, as in the official code, so the discriminator gets no
    gradient from this term.

    Args:
        real_fmaps: per sub-discriminator, its intermediate activations on real audio.
        fake_fmaps: the same on generated audio.

    Returns:
        A scalar tensor.
    """
    if len(real_fmaps) != len(fake_fmaps) or not real_fmaps:
        raise ValueError(
            f"expected equal, non-zero numbers of feature maps, got {len(real_fmaps)} and {len(fake_fmaps)}"
        )
    terms = []
    for rs, fs in zip(real_fmaps, fake_fmaps):
        if len(rs) != len(fs):
            raise ValueError(f"sub-discriminator feature-map counts differ: {len(rs)} vs {len(fs)}")
        terms.extend(torch.mean(torch.abs(r.detach() - f)) for r, f in zip(rs, fs))
    return torch.stack(terms).sum()


def mel_l1_loss(mel_real: torch.Tensor, mel_fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two log-mel spectrograms (unweighted; multiply by :data:`LAMBDA_MEL`).

    Lengths may differ by a frame or two at the edges (padding of the STFT); the shorter one wins.

    Args:
        mel_real: ``(B, n_mels, T)``.
        mel_fake: ``(B, n_mels, T')``.
    """
    t = min(mel_real.size(-1), mel_fake.size(-1))
    return F.l1_loss(mel_fake[..., :t], mel_real[..., :t])


#: ParallelWaveGAN's STFT resolutions ``(fft_size, hop_size, win_length)``, Hann windows: the same
#: triples as the MR-STFT metric's (one definition, in the neutral :mod:`rfspeech.spectral`).
PWG_STFT_RESOLUTIONS = STFT_RESOLUTIONS

_WINDOWS: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _stft_magnitude(x: torch.Tensor, fft_size: int, hop_size: int, win_length: int) -> torch.Tensor:
    key = (win_length, x.dtype, x.device)
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(win_length, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, fft_size, hop_size, win_length, _WINDOWS[key], return_complex=True)
    # clamped power before the root: the gradient of |z| is undefined at 0 (silent frames)
    return torch.sqrt(torch.clamp(spec.real.pow(2) + spec.imag.pow(2), min=1e-7)).transpose(1, 2)


def multi_resolution_stft_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    resolutions: Sequence[Sequence[int]] = PWG_STFT_RESOLUTIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ParallelWaveGAN's multi-resolution STFT loss (Yamamoto et al., 2020), averaged over resolutions.

    Per resolution, with magnitudes ``X = |STFT(fake)|`` and ``Y = |STFT(real)|`` (Hann window,
    centred frames, power clamped at ``1e-7``): spectral convergence ``‖Y − X‖_F / ‖Y‖_F`` (over the
    whole batch) and log-magnitude ``mean |log Y − log X|``.

    Args:
        fake: ``(B, 1, samples)`` or ``(B, samples)`` generated audio.
        real: the same shape, reference audio.
        resolutions: ``(fft_size, hop_size, win_length)`` triples.

    Returns:
        ``(spectral_convergence, log_magnitude)``; ParallelWaveGAN's generator loss is their sum.
    """
    if fake.dim() == 3:
        fake, real = fake.squeeze(1), real.squeeze(1)
    if fake.shape != real.shape or fake.dim() != 2:
        raise ValueError(f"expected equal (B, samples) waveforms, got {tuple(fake.shape)} and {tuple(real.shape)}")
    if not resolutions:
        raise ValueError("expected at least one STFT resolution")
    sc, mag = [], []
    for fft_size, hop_size, win_length in resolutions:
        x = _stft_magnitude(fake, int(fft_size), int(hop_size), int(win_length))
        y = _stft_magnitude(real, int(fft_size), int(hop_size), int(win_length))
        sc.append(torch.linalg.vector_norm(y - x) / torch.linalg.vector_norm(y))
        mag.append(F.l1_loss(torch.log(x), torch.log(y)))
    return torch.stack(sc).mean(), torch.stack(mag).mean()
