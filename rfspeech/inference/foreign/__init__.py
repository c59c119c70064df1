"""Foreign checkpoints (official HiFi-GAN, ParallelWaveGAN, BigVGAN): layouts mapped to rfspeech models."""
