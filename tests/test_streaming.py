"""Streaming synthesis: same samples as full synthesis, each released exactly when its look-ahead has arrived."""

from __future__ import annotations

import pytest
import torch

from rfspeech.errors import ConfigError
from rfspeech.inference.streaming import StreamingSynthesizer, stream_synthesis
from rfspeech.models.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANGenerator
from rfspeech.models.wavenet import WaveNetGenerator
from rfspeech.rf.lookahead import context

N_MELS = 8
TOL = 1e-5


def _v3() -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, **{**HIFIGAN_V3, "upsample_initial_channel": 16}).eval()


def _v1() -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, **{**HIFIGAN_V1, "upsample_initial_channel": 16}).eval()


def _blocks(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, s, i = [], 0, 0
    while s < total:
        n = min(sizes[i % len(sizes)], total - s)
        out.append((s, s + n))
        s += n
        i += 1
    return out


@pytest.mark.parametrize("family,chunk,sizes", [
    ("v3", 1, [1]), ("v3", 4, [1, 3, 2]), ("v3", 7, [5]), ("v1", 3, [2, 1]), ("v1", 30, [4]),
])
def test_stream_equals_full_with_stated_latency(family: str, chunk: int, sizes: list[int]) -> None:
    g = _v3() if family == "v3" else _v1()
    ctx = context(g)
    total = 26
    mel = torch.randn(1, N_MELS, total)
    with torch.no_grad():
        ref = g(mel)
    s = StreamingSynthesizer(g, chunk, context=ctx)
    assert s.latency_frames == ctx.lookahead_frames + chunk
    pieces, pushed_when = [], []  # frames pushed when each output frame came out
    for a, b in _blocks(total, sizes):
        audio = s.push(mel[..., a:b])
        pieces.append(audio)
        pushed_when += [b] * (audio.shape[-1] // g.hop_length)
    n_streamed = len(pushed_when)
    tail = s.flush()
    pieces.append(tail)
    pushed_when += [total] * (tail.shape[-1] // g.hop_length)
    out = torch.cat(pieces, -1)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
    # Latency: frame f leaves once at most look-ahead + chunk frames from f on have been pushed (plus
    # the rest of the push that brought the last of them, when frames come in blocks) ...
    for f, p in enumerate(pushed_when):
        assert p - f <= s.latency_frames + max(sizes) - 1, (f, p)
        if sizes == [1]:
            assert p - f <= s.latency_frames
    # ... and no later than needed: a chunk [c, c+chunk) leaves with the first push reaching c+chunk+look-ahead.
    for f in range(0, n_streamed, chunk):
        needed = f + chunk + ctx.lookahead_frames
        assert pushed_when[f] == next(b for _, b in _blocks(total, sizes) if b >= needed)
    # what was left for flush could not have been final earlier
    assert total - n_streamed < chunk + ctx.lookahead_frames


def test_stream_wavenet_with_pushed_noise() -> None:
    g = WaveNetGenerator(aux_channels=N_MELS, layers=6, stacks=2, residual_channels=8, gate_channels=16,
                         skip_channels=8).eval()
    total = 19
    mel = torch.randn(2, N_MELS, total)
    noise = torch.randn(2, 1, total * g.hop_length)
    with torch.no_grad():
        ref = g(mel, noise)
    s = StreamingSynthesizer(g, 2)
    out = [s.push(mel[..., a:b], noise[..., a * 256:b * 256]) for a, b in _blocks(total, [3, 1])]
    out.append(s.flush())
    assert (torch.cat(out, -1) - ref).abs().max().item() <= TOL
    with pytest.raises(ConfigError, match="noise must have shape"):
        StreamingSynthesizer(g, 2).push(mel[..., :2], noise[..., :10])


def test_stream_synthesis_iterable_and_memory_bound() -> None:
    g = _v3()
    ctx = context(g)
    mel = torch.randn(N_MELS, 40)
    with torch.no_grad():
        ref = g(mel.unsqueeze(0))
    s = StreamingSynthesizer(g, 3, context=ctx)
    longest = 0
    for a, b in _blocks(40, [2]):
        s.push(mel[:, a:b])
        longest = max(longest, s._mel.shape[-1])
    s.flush()
    # the buffer never holds more than history + chunk + look-ahead + one push
    assert longest <= ctx.history_frames + 3 + ctx.lookahead_frames + 2
    blocks = list(stream_synthesis(g, (mel[:, a:b] for a, b in _blocks(40, [5])), 4, context=ctx))
    assert all(x.shape[-1] > 0 for x in blocks)
    assert (torch.cat(blocks, -1) - ref).abs().max().item() <= TOL


def test_stream_bad_input() -> None:
    g = _v3()
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        StreamingSynthesizer(g, 0)
    s = StreamingSynthesizer(g, 2)
    s.push(torch.randn(N_MELS, 3))
    with pytest.raises(ConfigError, match="do not continue"):
        s.push(torch.randn(N_MELS + 1, 3))
    s.flush()
    with pytest.raises(ConfigError, match="push after flush"):
        s.push(torch.randn(N_MELS, 1))
    with pytest.raises(ConfigError, match="takes no noise"):
        StreamingSynthesizer(g, 2).push(torch.randn(N_MELS, 1), torch.randn(1, 1, 256))
    s.reset()
    assert s.push(torch.randn(N_MELS, 1)).shape == (1, 1, 0)


# ------------------------------------------------------------------------------------------ one set of look-ahead keys


def _compose_rf(*overrides: str):  # noqa: ANN202 - DictConfig
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose(config_name="rf", overrides=list(overrides))


def _eval(folder, arm: str, dilations: dict | None = None) -> None:  # noqa: ANN001
    import json

    from rfspeech.evaluate.runner import build_summary

    rows = [{"utt_id": f"u{i}", "status": "ok", "speaker": "", "warnings": "", "errors": "", "mcd": 5.0 + i / 10}
            for i in range(4)]
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "summary.json").write_text(json.dumps(build_summary(rows, ["mcd"])))
    (folder / "info.json").write_text(json.dumps({"arm": arm, **({"dilations": dilations} if dilations else {})}))


def test_rf_json_and_structure_yaml_share_the_report_keys(tmp_path, capsys) -> None:  # noqa: ANN001
    """rfspeech-rf's rf.json and a search's structure.yaml record the look-ahead under the keys the compare
    report reads, with the same numbers for the same dilations; the report shows both arms'."""
    import json

    from hydra.utils import instantiate

    from rfspeech.evaluate.report_data import aggregate, arms_of, load_experiment
    from rfspeech.evaluate.report_md import render_markdown
    from rfspeech.rf.lookahead import RECORD_KEYS, lookahead_record
    from rfspeech.runs.rf import run as rf_run
    from rfspeech.search import apply_structure, export_structure, receptive_field, save_structure

    # hand-designed arm: rfspeech-rf on the recipe's V3 at 24 kHz (sample_rate= without '+')
    hand = tmp_path / "hand"
    rf_run(_compose_rf("model=hifigan_v3", f"out_dir={hand}", "sample_rate=24000", "hints=false"))
    assert "look-ahead 11 frames (117.3 ms)" in capsys.readouterr().out
    la = json.loads((hand / "rf.json").read_text())["lookahead"]
    assert (la["lookahead_frames"], la["history_frames"], la["lookahead_ms"], la["sample_rate"]) == (11, 11, 117.333,
                                                                                                    24000)
    assert la["lookahead_mean_frames"] == pytest.approx(9.587890625)  # what the search budget bounds
    g = instantiate(_compose_rf("model=hifigan_v3").model.generator)
    _eval(hand, "hand-designed", export_structure(g))

    # searched arm: structure.yaml as the search writes it, receptive_field + the look-ahead record
    searched = tmp_path / "searched"
    structure = {p: d + 2 for p, d in export_structure(g).items()}
    apply_structure(g, structure, mode="single")
    record = lookahead_record(g, 24000)
    assert set(record) == set(RECORD_KEYS)
    save_structure(searched / "structure.yaml", structure, {"mode": "single"}, {**receptive_field(g), **record})
    _eval(searched, "searched")
    # rfspeech-rf structure= on the same file gives the same numbers under the same keys
    rf_run(_compose_rf("model=hifigan_v3", f"structure={searched / 'structure.yaml'}", f"out_dir={tmp_path / 'rf2'}",
                       "sample_rate=24000", "hints=false"))
    la2 = json.loads((tmp_path / "rf2" / "rf.json").read_text())["lookahead"]
    assert {k: la2[k] for k in RECORD_KEYS} == record and record["lookahead_frames"] > 11

    exps = [load_experiment(hand), load_experiment(searched)]
    assert exps[0].context["lookahead_frames"] == 11 and exps[1].context == {
        k: record[k] for k in exps[1].context}
    arms = arms_of(exps)
    md = render_markdown(aggregate(exps, title="t", created="now", reference_arm="hand-designed", arms=arms,
                                   utterances=[], ref_audio={}, figures=[]))
    row = next(line for line in md.splitlines() if line.startswith("| look-ahead / history"))
    assert "look-ahead 11 frames (117.3 ms) / history 11 frames (117.3 ms)" in row
    assert f"look-ahead {record['lookahead_frames']} frames ({record['lookahead_ms']:.1f} ms)" in row


def test_sample_rate_must_be_positive(tmp_path) -> None:  # noqa: ANN001
    from rfspeech.runs.rf import run as rf_run

    with pytest.raises(ConfigError, match="sample_rate must be a positive integer"):
        rf_run(_compose_rf("model=hifigan_v3", f"out_dir={tmp_path}", "sample_rate=-5"))
    assert not (tmp_path / "rf.json").exists()


def test_rf_sample_rate_from_the_checkpoint(tmp_path) -> None:  # noqa: ANN001
    import json

    from hydra.utils import instantiate

    from rfspeech.data.manifest import FeatureParams
    from rfspeech.runs.rf import run as rf_run
    from rfspeech.train.checkpoint import save_checkpoint

    node = {"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80,
            **HIFIGAN_V3, "upsample_initial_channel": 16}
    ckpt = save_checkpoint(tmp_path / "g.pt", {"generator": instantiate(node).state_dict(), "step": 0,
                                               "structure": None, "config": {"model": {"generator": node}},
                                               "feature_params": FeatureParams(sample_rate=24000).to_dict()})
    rf_run(_compose_rf(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'a'}", "segment=32", "hints=false"))
    la = json.loads((tmp_path / "a" / "rf.json").read_text())["lookahead"]
    assert la["sample_rate"] == 24000 and la["lookahead_ms"] == pytest.approx(1000 * 11 * 256 / 24000, abs=1e-3)
    rf_run(_compose_rf(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'b'}", "segment=32", "sample_rate=16000",
                       "hints=false"))
    assert json.loads((tmp_path / "b" / "rf.json").read_text())["lookahead"]["sample_rate"] == 16000


def test_rf_segment_of_a_checkpoint_is_its_training_segment(tmp_path) -> None:  # noqa: ANN001
    """rfspeech-rf checkpoint=CKPT without segment= counts unproductive layers at the run's own training segment
    (train.segment_size / hop), not at a fixed 32 frames; model= without segment= keeps 32."""
    from hydra.utils import instantiate

    from rfspeech.data.manifest import FeatureParams
    from rfspeech.runs.rf import run as rf_run
    from rfspeech.train.checkpoint import save_checkpoint

    node = {"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80,
            **HIFIGAN_V3, "upsample_initial_channel": 16}
    ckpt = save_checkpoint(tmp_path / "g.pt", {"generator": instantiate(node).state_dict(), "step": 0,
                                               "structure": None,
                                               "config": {"model": {"generator": node},
                                                          "train": {"segment_size": 4096}},
                                               "feature_params": FeatureParams().to_dict()})
    assert rf_run(_compose_rf(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'a'}", "hints=false"))["segment"] == 16
    assert rf_run(_compose_rf(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'b'}", "segment=8",
                              "hints=false"))["segment"] == 8
    assert rf_run(_compose_rf("model=hifigan_debug", f"out_dir={tmp_path / 'c'}", "hints=false"))["segment"] == 32
