"""Conv acoustic model: shapes, masking, learning, inference, searchable convs, config files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rfspeech.data.text import EOS_ID, num_symbols, text_to_sequence
from rfspeech.errors import ConfigError, DataError
from rfspeech.layers import DilatedConv1d, iter_dilated_convs
from rfspeech.models.acoustic import AcousticModel, acoustic_debug, positions_in_tokens, text_to_mel

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "model"
N_MELS = 16


def synthetic_batch(seed: int = 0, n_mels: int = N_MELS) -> dict[str, torch.Tensor]:
    """Mels made of one spectral template per symbol held for 2-4 frames: a learnable text->mel task."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_symbols(), n_mels, generator=g) * 2
    texts = ["hello world", "a cat sat", "ok"]
    seqs = [text_to_sequence(t) for t in texts]
    durs = [torch.randint(2, 5, (len(s),), generator=g) for s in seqs]
    tl = torch.tensor([len(s) for s in seqs])
    ml = torch.stack([d.sum() for d in durs])
    tokens = torch.zeros(len(seqs), int(tl.max()), dtype=torch.long)
    mels = torch.zeros(len(seqs), n_mels, int(ml.max()))
    for b, (s, d) in enumerate(zip(seqs, durs)):
        tokens[b, :len(s)] = torch.tensor(s)
        frames = torch.repeat_interleave(templates[torch.tensor(s)], d, dim=0).T
        mels[b, :, :frames.shape[1]] = frames + 0.05 * torch.randn(frames.shape, generator=g)
    return {"tokens": tokens, "token_lengths": tl, "mels": mels, "mel_lengths": ml, "durations": durs}


def test_forward_shapes_and_losses() -> None:
    model = acoustic_debug(n_mels=N_MELS)
    b = synthetic_batch()
    out = model(b["tokens"], b["token_lengths"], b["mels"], b["mel_lengths"])
    bsz, tx = b["tokens"].shape
    ty = b["mels"].shape[2]
    assert out["mel_pred"].shape == (bsz, N_MELS, ty)
    assert out["mel_prior"].shape == (bsz, N_MELS, ty)
    assert out["alignment"].shape == (bsz, tx, ty)
    assert out["log_duration_pred"].shape == (bsz, tx)
    assert out["durations"].sum(-1).tolist() == b["mel_lengths"].tolist()
    for i, n in enumerate(b["token_lengths"].tolist()):
        assert (out["durations"][i, :n] >= 1).all() and (out["durations"][i, n:] == 0).all()
    for k in ("loss/mel", "loss/duration", "loss/prior", "loss"):
        assert out[k].dim() == 0 and torch.isfinite(out[k])
    total = out["loss/mel"] + out["loss/duration"] + out["loss/prior"]
    torch.testing.assert_close(out["loss"], total)
    # Padding frames of the prediction are zero.
    short = int(b["mel_lengths"].argmin())
    assert out["mel_pred"][short, :, int(b["mel_lengths"][short]):].abs().sum() == 0


def test_padding_does_not_change_an_utterance() -> None:
    model = acoustic_debug(n_mels=N_MELS).eval()
    b = synthetic_batch()
    i = 2  # the shortest utterance, padded in the batch
    tl, ml = int(b["token_lengths"][i]), int(b["mel_lengths"][i])
    alone = model(b["tokens"][i:i + 1, :tl], b["token_lengths"][i:i + 1], b["mels"][i:i + 1, :, :ml],
                  b["mel_lengths"][i:i + 1])
    batched = model(b["tokens"], b["token_lengths"], b["mels"], b["mel_lengths"])
    torch.testing.assert_close(batched["mel_pred"][i, :, :ml], alone["mel_pred"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched["log_duration_pred"][i, :tl], alone["log_duration_pred"][0],
                               atol=1e-5, rtol=1e-4)


def test_every_loss_decreases_and_alignment_is_learned() -> None:
    torch.manual_seed(0)
    model = acoustic_debug(n_mels=N_MELS)
    b = synthetic_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(b["tokens"], b["token_lengths"], b["mels"], b["mel_lengths"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: out[k].item() for k in ("loss/mel", "loss/duration", "loss/prior")}
    last = {k: out[k].item() for k in first}
    for k in first:
        assert last[k] < 0.5 * first[k], (k, first[k], last[k])
    # The planted durations are recovered by MAS for most tokens.
    hits = total = 0
    for i, d in enumerate(b["durations"]):
        got = out["durations"][i, :len(d)]
        hits += int((got == d).sum())
        total += len(d)
    assert hits / total > 0.8, hits / total


def test_duration_loss_does_not_train_the_encoder() -> None:
    model = acoustic_debug(n_mels=N_MELS)
    b = synthetic_batch()
    out = model(b["tokens"], b["token_lengths"], b["mels"], b["mel_lengths"])
    out["loss/duration"].backward()
    assert model.encoder.blocks[0].conv.weight.grad is None or model.encoder.blocks[0].conv.weight.grad.abs().sum() == 0
    assert model.duration_predictor.proj.weight.grad.abs().sum() > 0


def test_inference_shapes_and_length_scale() -> None:
    model = acoustic_debug(n_mels=N_MELS).eval()
    b = synthetic_batch()
    mel, lengths = model.inference(b["tokens"], token_lengths=b["token_lengths"], return_lengths=True)
    assert mel.shape == (3, N_MELS, int(lengths.max()))
    assert (lengths >= b["token_lengths"]).all()
    single = model.inference(b["tokens"][0])
    assert single.shape[0] == 1 and single.shape[1] == N_MELS
    slow = model.inference(b["tokens"][0], length_scale=2.0)
    assert slow.shape[2] >= 2 * single.shape[2] - b["token_lengths"][0]
    with pytest.raises(ConfigError):
        model.inference(b["tokens"][0], length_scale=0)


def test_text_to_mel() -> None:
    model = acoustic_debug(n_mels=N_MELS)
    mel = text_to_mel(model, "Dr. Smith paid $5.")
    assert mel.dtype == np.float32 and mel.ndim == 2 and mel.shape[0] == N_MELS
    assert mel.shape[1] >= len(text_to_sequence("Dr. Smith paid $5."))
    with pytest.raises(DataError):
        text_to_mel(model, "  ")


def test_bad_input_is_a_clear_error() -> None:
    model = acoustic_debug(n_mels=N_MELS)
    b = synthetic_batch()
    with pytest.raises(DataError, match="n_mels"):
        model(b["tokens"], b["token_lengths"], b["mels"][:, :8], b["mel_lengths"])
    with pytest.raises(DataError, match="fewer mel frames than tokens"):
        model(b["tokens"], b["token_lengths"], b["mels"], torch.tensor([3, 3, 3]))
    with pytest.raises(ConfigError, match="odd"):
        AcousticModel(kernel_size=4)
    with pytest.raises(ConfigError):
        AcousticModel(decoder_dilations=())
    with pytest.raises(ConfigError):
        AcousticModel(encoder_dilations=(1, 0))


def test_searchable_convs_are_found_by_path() -> None:
    model = AcousticModel()
    names = dict(iter_dilated_convs(model))
    enc = [n for n in names if n.startswith("encoder.")]
    dec = [n for n in names if n.startswith("decoder.")]
    dur = [n for n in names if n.startswith("duration_predictor.")]
    assert len(enc) == 13 and len(dec) == 17 and len(dur) == 4
    assert enc[0] == "encoder.blocks.0.conv" and dec[-1] == "decoder.blocks.16.conv"
    assert [names[n].dilation[0] for n in dec[:4]] == [1, 2, 4, 8]
    assert all(isinstance(c, DilatedConv1d) and c.kernel_size[0] % 2 == 1 for c in names.values())


def test_changing_a_dilation_keeps_lengths() -> None:
    model = acoustic_debug(n_mels=N_MELS)
    for _, conv in iter_dilated_convs(model):
        conv.set_dilation(7)
    b = synthetic_batch()
    out = model(b["tokens"], b["token_lengths"], b["mels"], b["mel_lengths"])
    assert out["mel_pred"].shape == b["mels"].shape


def test_positions_in_tokens() -> None:
    path = torch.tensor([[[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]]], dtype=torch.float32)
    assert positions_in_tokens(path).tolist() == [[0, 1, 0, 1, 2]]


def test_default_parameter_count_is_speedyspeech_sized() -> None:
    n = sum(p.numel() for p in AcousticModel().parameters())
    assert 2_000_000 < n < 4_000_000  # 128 channels, 34 residual conv blocks


@pytest.mark.parametrize("name", ["acoustic", "acoustic_debug"])
def test_model_configs_build(name: str) -> None:
    from hydra.utils import instantiate

    cfg = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    assert "generator" not in cfg and cfg["acoustic"]["_target_"] == "rfspeech.models.acoustic.AcousticModel"
    model = instantiate(cfg["acoustic"], _convert_="all")
    assert isinstance(model, AcousticModel) and model.n_mels == 80
    assert model.n_symbols == num_symbols() and EOS_ID < model.n_symbols
    # Keys equal the constructor arguments.
    import inspect

    params = set(inspect.signature(AcousticModel.__init__).parameters) - {"self"}
    assert set(cfg["acoustic"]) - {"_target_"} == params
    mel = model.inference(torch.tensor(text_to_sequence("hi there")))
    assert mel.shape[1] == 80
