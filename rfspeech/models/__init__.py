"""Vocoder models (HiFi-GAN V1/V2/V3, ParallelWaveGAN-style WaveNet, with their discriminators) and the conv
acoustic model (text → mel)."""

from rfspeech.models._base import VocoderGenerator, count_parameters
from rfspeech.models.acoustic import AcousticModel
from rfspeech.models.bigvgan import BigVGANGenerator as BigVGANGenerator  # noqa: F401
from rfspeech.models.hifigan import (
    HiFiGANDiscriminator,
    HiFiGANGenerator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    load_official_hifigan_state_dict,
)
from rfspeech.models.wavenet import ParallelWaveGANDiscriminator, WaveNetGenerator

__all__ = [
    "AcousticModel",
    "HiFiGANDiscriminator",
    "HiFiGANGenerator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "ParallelWaveGANDiscriminator",
    "VocoderGenerator",
    "WaveNetGenerator",
    "count_parameters",
    "load_official_hifigan_state_dict",
]
