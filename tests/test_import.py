"""rfspeech-import end to end on official-layout files built here.

The official layouts are written independently of the package: plain ``nn.Conv1d``/``Conv2d``/
``ConvTranspose1d`` modules with the legacy ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (which
produce ``weight_g``/``weight_v`` and ``weight_orig``/``weight_u``/``weight_v`` keys), in the module
paths of the official HiFi-GAN and ParallelWaveGAN code, saved as those toolkits save them
(``{'generator': sd}``, ``{'mpd', 'msd', 'optim_g', 'optim_d', 'steps', 'epoch'}``,
``{'model': {'generator', 'discriminator'}, 'optimizer', 'scheduler', 'steps', 'epochs'}``).
The HiFi-GAN discriminator is the official one at 1/16 of its channels (``channel_scale``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from rfspeech.inference.loading import load_checkpoint, load_generator

warnings.filterwarnings("ignore", message=".*weight_norm.*")
REPO = Path(__file__).resolve().parents[1]


def _wn(m: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(m)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights: gains away from the norm of v, so a wrong weight-norm mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


# ------------------------------------------------------------------------------------ official HiFi-GAN layout
class _RB1(nn.Module):
    def __init__(self, ch: int, k: int, ds: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=(k * d - d) // 2)) for d in ds)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=(k - 1) // 2)) for _ in ds)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
        return x


class _HGen(nn.Module):
    def __init__(self, h: dict) -> None:
        super().__init__()
        c = h["upsample_initial_channel"]
        self.nk = len(h["resblock_kernel_sizes"])
        self.conv_pre = _wn(nn.Conv1d(h["num_mels"], c, 7, 1, padding=3))
        self.ups = nn.ModuleList(_wn(nn.ConvTranspose1d(c // 2**i, c // 2 ** (i + 1), k, u, padding=(k - u) // 2))
                                 for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])))
        self.resblocks = nn.ModuleList(_RB1(c // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                                       for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]))
        self.conv_post = _wn(nn.Conv1d(c // 2 ** len(self.ups), 1, 7, 1, padding=3))

    def forward(self, x):
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * self.nk + j](x) for j in range(self.nk)) / self.nk
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class _DP(nn.Module):  # official DiscriminatorP at 1/16 width
    def __init__(self) -> None:
        super().__init__()
        chs = [1, 2, 8, 32, 64]
        self.convs = nn.ModuleList([_wn(nn.Conv2d(chs[i], chs[i + 1], (5, 1), (3, 1), padding=(2, 0)))
                                    for i in range(4)] + [_wn(nn.Conv2d(64, 64, (5, 1), 1, padding=(2, 0)))])
        self.conv_post = _wn(nn.Conv2d(64, 1, (3, 1), 1, padding=(1, 0)))


class _DS(nn.Module):  # official DiscriminatorS at 1/16 width (groups as gcd with the scaled channels)
    def __init__(self, spectral: bool) -> None:
        super().__init__()
        norm = torch.nn.utils.spectral_norm if spectral else _wn
        spec = [(1, 8, 15, 1, 1, 7), (8, 8, 41, 2, 4, 20), (8, 16, 41, 2, 8, 20), (16, 32, 41, 4, 16, 20),
                (32, 64, 41, 4, 16, 20), (64, 64, 41, 1, 16, 20), (64, 64, 5, 1, 1, 2)]
        self.convs = nn.ModuleList(norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in spec)
        self.conv_post = norm(nn.Conv1d(64, 1, 3, 1, padding=1))


class _MPD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(_DP() for _ in range(5))


class _MSD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([_DS(True), _DS(False), _DS(False)])
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])


HIFIGAN_CONFIG = {
    "resblock": "1", "num_gpus": 0, "batch_size": 16, "learning_rate": 0.0002, "adam_b1": 0.8, "adam_b2": 0.99,
    "lr_decay": 0.999, "seed": 1234, "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 16, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "segment_size": 8192, "num_mels": 80,
    "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0,
    "fmax": 8000, "fmax_for_loss": None, "num_workers": 4,
}


@pytest.fixture(scope="module")
def hifigan_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hifigan")
    torch.manual_seed(0)
    ref = _randomize(_HGen(HIFIGAN_CONFIG), 1).eval()
    torch.save({"generator": ref.state_dict()}, d / "g_00000123")
    mpd, msd = _randomize(_MPD(), 2), _randomize(_MSD(), 3)
    with torch.no_grad():  # one power iteration, as training leaves u/v
        msd.discriminators[0].convs[0](torch.randn(1, 1, 64))
    opt_d = torch.optim.AdamW(list(msd.parameters()) + list(mpd.parameters()), 2e-4)
    torch.save({"mpd": mpd.state_dict(), "msd": msd.state_dict(), "optim_g": torch.optim.AdamW(
        ref.parameters(), 2e-4).state_dict(), "optim_d": opt_d.state_dict(), "steps": 123, "epoch": 4},
        d / "do_00000123")
    (d / "config.json").write_text(json.dumps(HIFIGAN_CONFIG))
    return d, ref, mpd, msd


def _import(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.import_checkpoint", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_hifigan_layout_keys_are_official(hifigan_files):
    d, _, _, _ = hifigan_files
    g = torch.load(d / "g_00000123", weights_only=True)["generator"]
    do = torch.load(d / "do_00000123", weights_only=True)
    assert {"conv_pre.weight_g", "conv_pre.weight_v", "ups.0.weight_g", "resblocks.0.convs1.1.weight_v"} <= set(g)
    assert {"discriminators.0.convs.0.weight_orig", "discriminators.0.convs.0.weight_u",
            "discriminators.1.convs.0.weight_g"} <= set(do["msd"])
    assert set(do) == {"mpd", "msd", "optim_g", "optim_d", "steps", "epoch"}


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_hifigan_import_synthesize_equals_the_official_model(hifigan_files, tmp_path):
    d, ref, mpd, msd = hifigan_files
    out = tmp_path / "imported.pt"
    r = _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={d / 'config.json'}",
                f"discriminator={d / 'do_00000123'}", f"out={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "imported hifigan" in r.stdout
    state = load_checkpoint(out)
    assert state["step"] == 123 and state["epoch"] == 4
    assert state["config"]["model"]["generator"]["_target_"].endswith("HiFiGANGenerator")
    assert state["feature_params"]["peak_normalize"] is True
    assert state["inference_feature_params"]["peak_normalize"] is False

    gen, fp = load_generator(out)
    mel = torch.randn(2, 80, 13)
    with torch.no_grad():
        expected, got = ref(mel), gen(mel)
    assert got.shape == expected.shape == (2, 1, 13 * 256)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-6, diff

    # the discriminator weights are the official ones: its MSD scale 0 (spectral norm, eval) and an MPD conv
    from hydra.utils import instantiate
    disc = instantiate(state["config"]["model"]["discriminator"])
    disc.load_state_dict(state["discriminator"])
    disc.eval()
    msd.eval()
    x = torch.randn(1, 1, 300)
    with torch.no_grad():
        ours = disc.msd.discriminators[0].convs[0](x)
        theirs = msd.discriminators[0].convs[0](x)
        assert (ours - theirs).abs().max().item() <= 1e-6
        y = torch.randn(1, 1, 40, 2)
        assert (disc.mpd.discriminators[1].convs[0](y) - mpd.discriminators[1].convs[0](y)).abs().max() <= 1e-6

    # rfspeech-synthesize on the imported checkpoint: the official audio, within 16-bit quantisation
    mels = tmp_path / "mels"
    mels.mkdir()
    np.save(mels / "u1.npy", mel[:1].numpy())  # inference_e2e.py layout (1, 80, T), no feats.yaml
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", f"checkpoint={out}", f"input_dir={mels}",
                        f"out_dir={tmp_path / 'wav'}", "mel_layout=auto", "progress=false", "warmup=false"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "only n_mels=80 is verified" in r.stderr
    w, sr = sf.read(tmp_path / "wav" / "u1.wav", dtype="float64")
    assert sr == 22050
    assert np.abs(w - expected[0, 0].numpy()).max() <= 1.0 / 32768 + 1e-6


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_hifigan_synthesize_on_wavs_uses_the_inference_mel(hifigan_files, tmp_path):
    d, ref, _, _ = hifigan_files
    out = tmp_path / "g.pt"
    assert _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={d / 'config.json'}",
                   f"out={out}", cwd=tmp_path).returncode == 0
    from rfspeech.data.features import log_mel
    from rfspeech.data.manifest import FeatureParams
    from rfspeech.inference.foreign import synthesis_features

    params, stats = synthesis_features(out, FeatureParams())
    assert params.peak_normalize is False and stats is None
    t = np.arange(22050 // 2) / 22050
    wav = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    sf.write(wavs / "a.wav", wav, 22050, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", f"checkpoint={out}", f"input_dir={wavs}",
                        f"out_dir={tmp_path / 'o'}", "progress=false", "warmup=false"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():  # official inference.py: mel of the raw audio, no 0.95 peak normalisation
        expected = ref(torch.from_numpy(log_mel(wav, params))[None])[0, 0].numpy()
    got, _ = sf.read(tmp_path / "o" / "a.wav", dtype="float64")
    assert np.abs(got - expected).max() <= 1.0 / 32768 + 1e-6


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_hifigan_import_then_fine_tune_with_the_imported_discriminator(hifigan_files, tmp_path):
    from train_fixtures import make_prepared, trainer

    d, _, _, _ = hifigan_files
    out = tmp_path / "imported.pt"
    assert _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={d / 'config.json'}",
                   f"discriminator={d / 'do_00000123'}", f"out={out}", cwd=tmp_path).returncode == 0
    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0, seconds=0.5)
    state = load_checkpoint(out)
    t = trainer(data, tmp_path / "exp", "model=hifigan_debug", "model.generator.upsample_initial_channel=16",
                f"init_from={out}", "train.max_steps=2", "train.validation_interval=0", "train.checkpoint_interval=2",
                "tensorboard=false")
    for k, v in t.discriminator.state_dict().items():
        assert torch.equal(v, state["discriminator"][k]), k
    for k, v in t.generator.state_dict().items():
        assert torch.equal(v, state["generator"][k]), k
    before = {k: v.clone() for k, v in t.discriminator.state_dict().items()}
    result = t.fit()
    assert result.step == 2
    changed = [k for k, v in t.discriminator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the imported discriminator was trained, not replaced


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_hifigan_bad_input_is_one_line_and_writes_nothing(hifigan_files, tmp_path):
    d, _, _, _ = hifigan_files
    out = tmp_path / "x.pt"
    bad = {**HIFIGAN_CONFIG, "upsample_rates": [8, 8, 4, 2]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={tmp_path / 'bad.json'}", f"out={out}",
                cwd=tmp_path)
    assert r.returncode == 2 and "upsample_rates" in r.stderr and "hop_size" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()
    wide = {**HIFIGAN_CONFIG, "upsample_initial_channel": 32}
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    r = _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={tmp_path / 'wide.json'}",
                f"out={out}", cwd=tmp_path)
    assert r.returncode == 2 and "g_00000123" in r.stderr and "shapes contradict" in r.stderr
    sd = torch.load(d / "g_00000123", weights_only=True)["generator"]
    sd["extra.weight"] = torch.zeros(1)
    del sd["conv_post.bias"]
    torch.save({"generator": sd}, tmp_path / "g_odd")
    r = _import("format=hifigan", f"checkpoint={tmp_path / 'g_odd'}", f"config={d / 'config.json'}", f"out={out}",
                cwd=tmp_path)
    assert r.returncode == 2 and "g_odd" in r.stderr and "conv_post.bias" in r.stderr and "extra.weight" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()
    assert list(tmp_path.glob(".x.pt*")) == []


# ------------------------------------------------------------------------------------ official PWG layout
class _PResBlock(nn.Module):
    def __init__(self, k: int, res: int, gate: int, skip: int, aux: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(res, gate, k, padding=(k - 1) // 2 * dilation, dilation=dilation)
        self.conv1x1_aux = nn.Conv1d(aux, gate, 1, bias=False)
        self.conv1x1_out = nn.Conv1d(gate // 2, res, 1)
        self.conv1x1_skip = nn.Conv1d(gate // 2, skip, 1)

    def forward(self, x, c):
        h = self.conv(x)
        a, b = h.split(h.size(1) // 2, dim=1)
        ca, cb = self.conv1x1_aux(c).split(h.size(1) // 2, dim=1)
        z = torch.tanh(a + ca) * torch.sigmoid(b + cb)
        return (self.conv1x1_out(z) + x) * math.sqrt(0.5), self.conv1x1_skip(z)


class _PUpsample(nn.Module):
    def __init__(self, scales: list[int]) -> None:
        super().__init__()
        layers = []
        for s in scales:
            layers += [nn.Upsample(scale_factor=(1, s), mode="nearest"), nn.Conv2d(1, 1, (1, 2 * s + 1),
                                                                                   padding=(0, s), bias=False)]
        self.up_layers = nn.ModuleList(layers)


class _PConvIn(nn.Module):
    def __init__(self, scales: list[int], aux: int, win: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv1d(aux, aux, 2 * win + 1, bias=False)
        self.upsample = _PUpsample(scales)

    def forward(self, c):  # c already padded by aux_context_window frames per side
        c = self.conv_in(c).unsqueeze(1)
        for f in self.upsample.up_layers:
            c = f(c)
        return c.squeeze(1)


class _PGen(nn.Module):
    def __init__(self, p: dict) -> None:
        super().__init__()
        per = p["layers"] // p["stacks"]
        self.win = p["aux_context_window"]
        self.first_conv = nn.Conv1d(1, p["residual_channels"], 1)
        self.upsample_net = _PConvIn(p["upsample_params"]["upsample_scales"], p["aux_channels"], self.win)
        self.conv_layers = nn.ModuleList(
            _PResBlock(p["kernel_size"], p["residual_channels"], p["gate_channels"], p["skip_channels"],
                       p["aux_channels"], 2 ** (i % per)) for i in range(p["layers"]))
        self.last_conv_layers = nn.ModuleList([nn.ReLU(), nn.Conv1d(p["skip_channels"], p["skip_channels"], 1),
                                               nn.ReLU(), nn.Conv1d(p["skip_channels"], 1, 1)])
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                _wn(m)

    def forward(self, z, c):
        c = self.upsample_net(c)
        x, skips = self.first_conv(z), 0
        for f in self.conv_layers:
            x, h = f(x, c)
            skips = skips + h
        x = skips * math.sqrt(1.0 / len(self.conv_layers))
        for f in self.last_conv_layers:
            x = f(x)
        return x


class _PDisc(nn.Module):
    def __init__(self, layers: int, ch: int) -> None:
        super().__init__()
        mods, cin = [], 1
        for i in range(layers - 1):
            dil = 1 if i == 0 else i
            mods += [_wn(nn.Conv1d(cin, ch, 3, padding=dil, dilation=dil)), nn.LeakyReLU(0.2)]
            cin = ch
        mods.append(_wn(nn.Conv1d(cin, 1, 3, padding=1)))
        self.conv_layers = nn.ModuleList(mods)


PWG_CONFIG = {
    "sampling_rate": 16000, "fft_size": 1024, "hop_size": 256, "win_length": None, "window": "hann",
    "num_mels": 20, "fmin": 80, "fmax": 7600, "global_gain_scale": 1.0, "trim_silence": True,
    "trim_threshold_in_db": 60, "trim_frame_size": 2048, "trim_hop_size": 512, "format": "hdf5",
    "generator_params": {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "layers": 6, "stacks": 2,
                         "residual_channels": 8, "gate_channels": 16, "skip_channels": 8, "aux_channels": 20,
                         "aux_context_window": 2, "dropout": 0.0, "use_weight_norm": True,
                         "upsample_net": "ConvInUpsampleNetwork", "upsample_params": {"upsample_scales": [4, 4, 4, 4]}},
    "discriminator_params": {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "layers": 4, "conv_channels": 8,
                             "bias": True, "use_weight_norm": True, "nonlinear_activation": "LeakyReLU",
                             "nonlinear_activation_params": {"negative_slope": 0.2}},
}


@pytest.fixture(scope="module")
def pwg_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pwg")
    torch.manual_seed(0)
    gen = _randomize(_PGen(PWG_CONFIG["generator_params"]), 4).eval()
    disc = _randomize(_PDisc(4, 8), 5)
    opt = torch.optim.Adam(gen.parameters(), 1e-4)
    torch.save({"model": {"generator": gen.state_dict(), "discriminator": disc.state_dict()},
                "optimizer": {"generator": opt.state_dict(), "discriminator": opt.state_dict()},
                "scheduler": {"generator": {"step_size": 200000, "gamma": 0.5, "last_epoch": 7}},
                "steps": 7, "epochs": 1}, d / "checkpoint-7steps.pkl")
    (d / "config.yml").write_text(yaml.safe_dump(PWG_CONFIG))
    rng = np.random.default_rng(0)
    np.save(d / "stats.npy", np.stack([rng.standard_normal(20), rng.uniform(0.5, 2, 20)]).astype(np.float32))
    return d, gen, disc


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_pwg_import_synthesize_equals_the_official_model(pwg_files, tmp_path):
    d, gen, disc = pwg_files
    assert "upsample_net.upsample.up_layers.1.weight_g" in torch.load(d / "checkpoint-7steps.pkl",
                                                                      weights_only=True)["model"]["generator"]
    out = tmp_path / "pwg.pt"
    r = _import("format=pwg", f"checkpoint={d / 'checkpoint-7steps.pkl'}", f"config={d / 'config.yml'}",
                f"stats={d / 'stats.npy'}", f"out={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trim_top_db=60" in r.stdout
    state = load_checkpoint(out)
    fp = state["feature_params"]
    assert fp["center"] is True and fp["log_base"] == "10" and fp["normalize"] is True and fp["fmin"] == 80.0
    assert np.allclose(state["feature_stats"]["mean"].numpy(), np.load(d / "stats.npy")[0])
    g, _ = load_generator(out)
    mel = torch.randn(1, 20, 11)
    z = torch.randn(1, 1, 11 * 256)
    with torch.no_grad():
        expected = gen(z, F.pad(mel, (2, 2), mode="replicate"))  # official inference(): ReplicationPad1d(2)
        got = g(mel, z)
    assert (got - expected).abs().max().item() <= 1e-6
    # discriminator: conv_layers.{0,2,4} → convs.{0,1,2}, conv_layers.6 → conv_post
    from hydra.utils import instantiate
    dd = instantiate(state["config"]["model"]["discriminator"])
    dd.load_state_dict(state["discriminator"])
    x = torch.randn(1, 1, 500)
    with torch.no_grad():
        ref = x
        for f in disc.conv_layers:
            ref = f(ref)
        assert (dd(x)[0][0] - ref.flatten(1)).abs().max().item() <= 1e-6


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_pwg_import_reads_stats_h5(pwg_files, tmp_path):
    h5py = pytest.importorskip("h5py")
    d, _, _ = pwg_files
    st = np.load(d / "stats.npy")
    with h5py.File(tmp_path / "stats.h5", "w") as f:
        f["mean"], f["scale"] = st[0], st[1]
    out = tmp_path / "pwg.pt"
    r = _import("format=pwg", f"checkpoint={d / 'checkpoint-7steps.pkl'}", f"config={d / 'config.yml'}",
                f"stats={tmp_path / 'stats.h5'}", f"out={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.allclose(load_checkpoint(out)["feature_stats"]["scale"].numpy(), st[1])


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_pwg_bad_input(pwg_files, tmp_path):
    d, _, _ = pwg_files
    out = tmp_path / "x.pt"
    (tmp_path / "bad.yml").write_text(yaml.safe_dump({**PWG_CONFIG, "hop_size": 300}))
    r = _import("format=pwg", f"checkpoint={d / 'checkpoint-7steps.pkl'}", f"config={tmp_path / 'bad.yml'}",
                f"out={out}", cwd=tmp_path)
    assert r.returncode == 2 and "upsample_scales" in r.stderr and "hop_size = 300" in r.stderr
    torch.save({"generator": {"w": torch.zeros(1)}}, tmp_path / "odd.pkl")
    r = _import("format=pwg", f"checkpoint={tmp_path / 'odd.pkl'}", f"config={d / 'config.yml'}", f"out={out}",
                cwd=tmp_path)
    assert r.returncode == 2 and "odd.pkl" in r.stderr and "'model'" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("rfspeech.models.bigvgan") is None
                    or importlib.util.find_spec("rfspeech.inference.foreign.bigvgan") is None,
                    reason="BigVGAN model / config mapping not in this tree")
def test_bigvgan_import_round_trip(tmp_path):
    from rfspeech.inference.foreign import BIGVGAN_TARGET, build, import_bigvgan
    from rfspeech.inference.foreign import bigvgan as mapping

    cfg = {"resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
           "upsample_initial_channel": 128, "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "activation": "snakebeta",
           "snake_logscale": True, "use_tanh_at_final": False, "use_bias_at_final": False, "num_mels": 80,
           "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": None}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    gen = build({"_target_": BIGVGAN_TARGET, **mapping.generator_args(cfg)})
    torch.save({"generator": gen.state_dict()}, tmp_path / "bigvgan_generator.pt")
    state = import_bigvgan(checkpoint=tmp_path / "bigvgan_generator.pt", config=tmp_path / "config.json")
    for k, v in gen.state_dict().items():
        assert torch.equal(state["generator"][k], v)


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_pwg_synthesize_on_wavs_uses_its_framing_and_stats(pwg_files, tmp_path):
    d, gen, _ = pwg_files
    out = tmp_path / "pwg.pt"
    assert _import("format=pwg", f"checkpoint={d / 'checkpoint-7steps.pkl'}", f"config={d / 'config.yml'}",
                   f"stats={d / 'stats.npy'}", f"out={out}", cwd=tmp_path).returncode == 0
    rng = np.random.default_rng(1)
    wav = (0.2 * np.sin(2 * np.pi * 150 * np.arange(4000) / 16000) + 0.01 * rng.standard_normal(4000))
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    sf.write(wavs / "a.wav", wav.astype(np.float32), 16000, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", f"checkpoint={out}", f"input_dir={wavs}",
                        f"out_dir={tmp_path / 'o'}", "progress=false", "warmup=false", "seed=0"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # no stats= needed: the checkpoint carries them
    # reference: librosa as PWG's logmelfilterbank, z-scored with the stats, official forward with padded c
    import librosa

    spc = np.abs(librosa.stft(wav.astype(np.float32).astype(np.float64), n_fft=1024, hop_length=256,
                              window="hann", pad_mode="reflect")).T
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=20, fmin=80, fmax=7600)
    mel = np.log10(np.maximum(1e-10, spc @ basis.T))
    st = np.load(d / "stats.npy")
    c = torch.from_numpy(((mel - st[0]) / st[1]).T).float()[None]
    assert c.shape[-1] == 1 + 4000 // 256
    torch.manual_seed(0)
    z = torch.empty(1, 1, c.shape[-1] * 256).normal_()
    with torch.no_grad():
        expected = gen(z, F.pad(c, (2, 2), mode="replicate"))[0, 0].clamp(-1, 1).numpy()
    got, _ = sf.read(tmp_path / "o" / "a.wav", dtype="float64")
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0 / 32768 + 1e-5
