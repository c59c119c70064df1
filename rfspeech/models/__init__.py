"""Vocoder models: HiFi-GAN (V1/V2/V3) and ParallelWaveGAN-style WaveNet, with their discriminators."""

from rfspeech.models._base import VocoderGenerator, count_parameters
from rfspeech.models.hifigan import (
    HiFiGANDiscriminator,
    HiFiGANGenerator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    load_official_hifigan_state_dict,
)
from rfspeech.models.wavenet import ParallelWaveGANDiscriminator, WaveNetGenerator

__all__ = [
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
