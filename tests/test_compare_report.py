"""Report fixes: verdict wording, degenerate-metric caveats, no bold ties, the whole reference spectrogram,
the equal-budget cost warning, receptive field and look-ahead per arm, per-speaker table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfspeech.evaluate.report import write_report
from rfspeech.evaluate.report_data import Experiment, aggregate, arms_of, find_context
from rfspeech.evaluate.report_html import render_html
from rfspeech.evaluate.report_md import render_markdown
from rfspeech.evaluate.report_text import context_text
from rfspeech.evaluate.runner import BASE_COLUMNS, _to_csv, build_summary

REF_MCD = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
WOBBLE = [0.01, -0.02, 0.015, -0.01, 0.02, -0.015]


def _rows(cols: dict[str, list[float | None]], speakers: list[str] | None = None) -> list[dict]:
    n = len(next(iter(cols.values())))
    rows = []
    for i in range(n):
        row = {"utt_id": f"u{i}", "status": "ok", "speaker": speakers[i] if speakers else "", "warnings": "",
               "errors": "; ".join(f"{c}=no voiced frames" for c, v in cols.items() if v[i] is None)}
        row.update({c: v[i] for c, v in cols.items()})
        rows.append(row)
    return rows


def _exp(name: str, arm: str, cols: dict[str, list[float | None]], seed: int = 1, **kw: object) -> Experiment:
    rows = _rows(cols)
    return Experiment(path=Path(name), name=name, arm=arm, seed=seed, summary=build_summary(rows, list(cols)),
                      rows=rows, speed=None, structure=kw.get("dilations"), structure_settings=None,
                      rf=kw.get("rf"), info={}, cost=kw.get("cost"), context=kw.get("context"))


def _data(exps: list[Experiment]):  # noqa: ANN202 - ReportData
    arms = arms_of(exps)
    return aggregate(exps, title="t", created="now", reference_arm="hand-designed", arms=arms, utterances=[],
                     ref_audio={}, figures=[])


def _shift(values: list[float], by: float, wobble: float = 1.0) -> list[float]:
    return [v + by + wobble * w for v, w in zip(values, WOBBLE)]


# --------------------------------------------------------------------------- verdict

SEED_NOISE = {1: 0.001, 2: -0.002, 3: 0.0015}


def _seeds(name: str, arm: str, cols: dict[str, list[float]], noise: float = 1.0,
           seeds: tuple[int, ...] = (1, 2, 3)) -> list[Experiment]:
    """One run per seed: every value of seed s shifted by noise · SEED_NOISE[s] (a small seed effect)."""
    return [_exp(f"{name}{s}", arm, {c: [None if v is None else v + noise * SEED_NOISE.get(s, 0.0) for v in vals]
                                     for c, vals in cols.items()}, seed=s) for s in seeds]


def test_verdict_better_worse_and_no_difference() -> None:
    stoi = [0.70, 0.72, 0.74, 0.76, 0.78, 0.80]
    pesq = [1.5, 1.6, 1.7, 1.8, 1.9, 2.0]
    stft = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD, "pesq": pesq, "stoi": stoi, "stft_distance": stft})
    searched = _seeds("s", "searched", {"mcd": _shift(REF_MCD, -1.0), "pesq": pesq, "stoi": _shift(stoi, 0.05),
                                        "stft_distance": _shift(stft, 0.3)}, noise=-2.0)
    data = _data(hand + searched)
    assert data.verdict[1:] == ["searched is significantly better than hand-designed on MCD and STOI, worse on "
                                "MR-STFT, with no significant difference on PESQ (paired by seed, n = 3 seeds: "
                                "t-interval over per-seed paired mean differences, 95 %, Holm over 4 metrics)."]
    md = render_markdown(data)
    assert md.index("## Verdict") < md.index("## Arms") and f"**{data.verdict[1]}**" in md
    assert "The run (seed) is the unit." in md and "## Differences vs hand-designed" in md
    assert data.verdict[1] in render_html(data)
    assert data.verdict[0] == ("searched: dilations not recorded, so whether its structure differs from hand-designed "
                               "is unknown.")


def test_verdict_no_significant_difference_and_worse_only() -> None:
    stoi = [0.7, 0.71, 0.72, 0.73, 0.74, 0.75]
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD, "stoi": stoi})
    same = _seeds("s", "searched", {"mcd": REF_MCD, "stoi": stoi}, noise=-2.0)
    assert _data(hand + same).verdict[1:] == ["searched vs hand-designed: no significant difference on MCD and STOI "
                                          "(paired by seed, n = 3 seeds: t-interval over per-seed paired mean "
                                          "differences, 95 %, Holm over 2 metrics)."]
    worse = _seeds("s", "searched", {"mcd": _shift(REF_MCD, 0.5), "stoi": stoi}, noise=-2.0)
    assert _data(hand + worse).verdict[1].startswith("searched is significantly worse than hand-designed on MCD, "
                                                     "with no significant difference on STOI (paired by seed")
    assert _data(hand).verdict == ["One arm only (hand-designed): nothing to compare."]


def test_too_few_runs_gives_no_verdict_and_no_winner() -> None:
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD}, seeds=(1, 2))
    searched = _seeds("s", "searched", {"mcd": _shift(REF_MCD, -1.0)}, seeds=(1, 2))
    data = _data(hand + searched)
    assert data.verdict[1:] == ["searched vs hand-designed: too few runs for a verdict (n = 2; 3 needed); the tables "
                            "describe the runs, they test no difference."]
    assert data.paired["searched"]["mcd"]["verdict"] == "too few runs"
    assert data.paired["searched"]["mcd"]["mean"] == pytest.approx(-1.0)  # the descriptive difference is kept
    assert data.winners == {"mcd": None}
    md = render_markdown(data)
    assert "too few runs for a verdict (n = 2; 3 needed)" in md and "(too few runs, n = 2 seeds)" in md
    single = _data([_exp("h", "hand-designed", {"mcd": REF_MCD}), _exp("s", "searched", {"mcd": REF_MCD})])
    assert "too few runs for a verdict (n = 1; 3 needed)" in single.verdict[1]


# --------------------------------------------------------------------------- structure first


HAND_D = {"blocks.0.conv": 1, "blocks.1.conv": 3, "blocks.2.conv": 5}


def test_the_verdict_says_first_whether_the_structure_changed() -> None:
    hand = [_exp(f"h{s}", "hand-designed", {"mcd": _shift(REF_MCD, 0.0, s)}, seed=s, dilations=dict(HAND_D),
                 rf={"r_min": 8.0, "r_max": 26.45, "units": "frames"}) for s in (1, 2, 3)]
    kept = [_exp(f"s{s}", "searched", {"mcd": _shift(REF_MCD, -1.0, s)}, seed=s, dilations=dict(HAND_D),
                 rf={"r_min": 8.0, "r_max": 26.45, "units": "frames"}) for s in (1, 2, 3)]
    data = _data(hand + kept)
    assert data.verdict[0] == ("searched: the search kept the hand-designed dilations in every run; differences come "
                               "from training, not from the receptive field.")
    assert data.verdict[1].startswith("searched is significantly better than hand-designed on MCD")
    assert data.structures["searched"]["runs_changed"] == 0 and data.structures["searched"]["compared_layers"] == 3
    md = render_markdown(data)
    assert md.index("the search kept the hand-designed dilations") < md.index("significantly better")
    assert "## Structure vs hand-designed" in md and "| searched | 3 | 0/3 | none | 26.45 → 26.45 |" in md
    moved = [_exp(f"s{s}", "searched", {"mcd": _shift(REF_MCD, -1.0, s)}, seed=s,
                  dilations={**HAND_D, **({"blocks.1.conv": 2, "blocks.2.conv": 9} if s == 1 else
                                         {"blocks.1.conv": 4} if s == 2 else {})},
                  rf={"r_min": 8.0, "r_max": {1: 30.0, 2: 28.1, 3: 26.45}[s], "units": "frames"}) for s in (1, 2, 3)]
    data = _data(hand + moved)
    assert data.verdict[0] == ("searched: 2 of 3 runs changed dilations from hand-designed (2 layers in all, 0–2 per "
                               "run); receptive field r_max 26.45 → 26.45–30 frames.")
    layers = data.structures["searched"]["layers"]
    assert layers == {"blocks.1.conv": {"runs": 2, "from": 3, "to": [2, 4]}, "blocks.2.conv": {"runs": 1, "from": 5,
                                                                                                "to": [9]}}
    md = render_markdown(data)
    assert "| searched | 3 | 2/3 | blocks.1.conv 3→2,4 (2); blocks.2.conv 5→9 (1) | 26.45 → 26.45–30 |" in md
    assert 'id="structure-table"' in render_html(data)

    # a learned-spacing arm against a reference of other dilations: one layer ends as a dilation in one run and
    # as a tap list in another (the repair study's DCLS arm vs V1 failed to render before)
    mixed = [_exp(f"d{s}", "dcls", {"mcd": _shift(REF_MCD, 0.0, s)}, seed=s,
                  dilations={**HAND_D, "blocks.1.conv": [-5, 0, 4] if s == 1 else 5}) for s in (1, 2, 3)]
    md = render_markdown(_data(hand + mixed))
    assert "blocks.1.conv 3→5,[-5, 0, 4] (3)" in md


def test_what_the_search_saw() -> None:
    from rfspeech.evaluate.report_data import search_view

    def layer(d: int, e: float, shift: float, to: int) -> dict:
        return {"dilation": d, "candidates": [d - 1, d, d + 1], "weights": [0.1, 0.8, 0.1], "expectation": e,
                "to_threshold": round(0.5 - abs(e - d), 5), "shift": shift, "to": to, "restart": None}

    log = {"local": {"history": [
        {"step": 50, "round": 1, "structure": {"a": 15, "b": 3, "c": 5},
         "layers": {"a": layer(15, 14.2, 0.4, 14), "b": layer(3, 3.45, 0.2, 3), "c": layer(5, 5.1, 0.05, 5)}},
        {"step": 100, "round": 2, "structure": {"a": 13, "b": 3, "c": 5},
         "layers": {"a": layer(14, 13.4, 0.3, 13), "b": layer(3, 3.3, 0.25, 3), "c": layer(5, 5.0, 0.01, 5)}}]},
        "reach": {"warnings": ["search budget (...) cannot reach ..."]}}
    v = search_view(log)
    assert v["moved"] == {"a": [15, 13]} and v["near"] == {"b": 0.05} and v["shifts"][0] == ["a", 0.4]
    assert v["rounds"] == 2 and v["reach_warnings"] and v["diagnostics"]
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD})
    searched = _seeds("s", "searched", {"mcd": REF_MCD}, noise=-2.0)
    searched[0].search_log = log
    md = render_markdown(_data(hand + searched))
    line = next(x for x in md.splitlines() if x.startswith("- s1: "))
    assert "2 rounds over 3 layers; 1 moved (a 15→13); 1 more came within 0.1 of moving (b (0.050))" in line
    assert "largest α shifts a 0.40, b 0.25, c 0.05" in line and "before it ran: search budget" in line
    assert md.index("## What the search saw") < md.index("## Arms")
    # an older log (structures only) still says what moved
    old = search_view({"local": {"history": [{"step": 1, "structure": {"a": 15}}, {"step": 2, "structure": {"a": 9}}]}})
    assert old["moved"] == {"a": [15, 9]} and not old["diagnostics"]


def test_what_a_learned_spacing_search_saw() -> None:
    """A dcls search log: tap lists among the dilations, moves counted from the logged start (issue 30)."""
    from rfspeech.evaluate.report_data import search_view, search_view_text

    log = {"strategy": "dcls", "local": {"start": {"a": 3, "b": 1, "c": 2}, "history": [
        {"step": 2, "structure": {"a": [-5, 0, 2], "b": 1, "c": 2}, "frozen": False},
        {"step": 4, "structure": {"a": [-5, 0, 2], "b": 1, "c": 4}, "frozen": True}]}}
    v = search_view(log)
    assert v["moved"] == {"a": [3, [-5, 0, 2]], "c": [2, 4]} and v["layers"] == 3 and not v["diagnostics"]
    assert "2 moved (a 3→[-5, 0, 2], c 2→4); dcls: tap positions, no branch weights" in search_view_text(v)


# --------------------------------------------------------------------------- no bold ties


def test_only_a_significant_winner_is_bold() -> None:
    pesq = [2.0] * 3 + [2.2] * 3
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD, "pesq": pesq})
    tie = _seeds("s", "searched", {"mcd": list(REF_MCD), "pesq": pesq}, noise=-5.0)
    data = _data(hand + tie)
    assert data.winners == {"mcd": None, "pesq": None}
    md = render_markdown(data)
    md = md[md.index("## Arms"):]
    arm_rows = [line for line in md.splitlines() if line.startswith(("| hand-designed |", "| searched |"))][:2]
    assert arm_rows and not any("**" in r for r in arm_rows)
    assert 'class="best"' not in render_html(data)
    better = _seeds("s", "searched", {"mcd": _shift(REF_MCD, -1.0), "pesq": pesq}, noise=-5.0)
    data = _data(hand + better)
    assert data.winners == {"mcd": "searched", "pesq": None}
    md = render_markdown(data)
    row = next(line for line in md[md.index("## Arms"):].splitlines() if line.startswith("| searched | 3 |"))
    assert row.count("**") == 2 and "**6.4" in row
    assert render_html(data).count('class="best"') == 1
    # a significant difference below the practical threshold is no win: negligible
    small = _seeds("s", "searched", {"mcd": _shift(REF_MCD, -0.05), "pesq": pesq}, noise=-0.2)
    data = _data(hand + small)
    assert data.paired["searched"]["mcd"]["verdict"] == "negligible" and data.winners["mcd"] is None
    assert "a negligible difference on MCD (below 0.100)" in data.verdict[1]


# --------------------------------------------------------------------------- caveats


def test_degenerate_metrics_are_caveats_and_leave_the_verdict() -> None:
    none = [None] * 6
    hand = _seeds("h", "hand-designed", {"mcd": REF_MCD, "f0_rmse": none, "vuv_error": [0.1] * 6,
                                         "frame_periodicity": [0.99] * 3 + [0.98] * 3}, noise=0.0)
    searched = _seeds("s", "searched", {"mcd": _shift(REF_MCD, -1.0), "f0_rmse": none, "vuv_error": [0.1] * 6,
                                        "frame_periodicity": [0.1] * 3 + [0.12] * 3}, noise=0.0)
    data = _data(hand + searched)
    text = "\n".join(data.caveats)
    assert "F0 RMSE could not be computed in any experiment (no voiced frames)" in text
    assert "V/UV err has the same value (0.1) in every experiment" in text
    assert "hand-designed: the output is a frame-rate buzz (frame periodicity 0.9" in text
    assert [data.paired["searched"][c]["verdict"] for c in ("f0_rmse", "vuv_error")] == ["left out", "left out"]
    assert "searched: the output is a frame-rate buzz" not in text
    assert data.degenerate == {"f0_rmse", "vuv_error"}
    assert "F0" not in data.verdict[1] and "V/UV" not in data.verdict[1] and "MCD" in data.verdict[1]
    md = render_markdown(data)
    assert "Caveats:" in md and "- F0 RMSE could not be computed" in md
    assert "F0 RMSE could not be computed" in render_html(data)
    # Some utterances without a voiced frame: said, with the count, and the metric stays in the verdict.
    part = _exp("p", "searched", {"mcd": _shift(REF_MCD, -1.0), "f0_rmse": [None, 3.0, 4.0, 5.0, 6.0, 7.0]})
    hand2 = _exp("h", "hand-designed", {"mcd": REF_MCD, "f0_rmse": [2.0, 3.5, 4.2, 5.1, 6.3, 7.2]})
    data = _data([hand2, part])
    assert any("no frame voiced in both signals for some utterances" in c and "p (1/6)" in c for c in data.caveats)
    assert "f0_rmse" not in data.degenerate


def test_identical_f0_across_runs_is_a_caveat() -> None:
    f0 = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    exps = [_exp("h1", "hand-designed", {"mcd": REF_MCD, "f0_rmse": f0}, seed=1),
            _exp("h2", "hand-designed", {"mcd": _shift(REF_MCD, 0.1), "f0_rmse": f0}, seed=2),
            _exp("s1", "searched", {"mcd": _shift(REF_MCD, -1.0), "f0_rmse": f0}, seed=1)]
    data = _data(exps)
    assert "f0_rmse" in data.degenerate and data.winners["f0_rmse"] is None
    assert any("F0 RMSE has the same value (12.5) in every experiment" in c for c in data.caveats)
    # A column only in the summaries (rfspeech-synthesize's duration error) is judged by its means.
    for e, v in zip(exps, (2.0, 2.5, 1.5)):
        e.summary["metrics"]["duration_mae_frames"] = {"n": 6, "mean": v}
    data = _data(exps)
    assert "duration_mae_frames" in data.columns and "duration_mae_frames" not in data.degenerate


# --------------------------------------------------------------------------- cost


COST = {"train_steps": 1000, "search_steps": 0, "global_proxy_steps": 0, "cpu_seconds": 100.0, "gpu_seconds": 0.0,
        "wall_seconds": 60.0, "init_from": "pretrained.pt"}


def test_cost_table_and_equal_budget_warning(caplog: pytest.LogCaptureFixture) -> None:
    hand = _exp("h", "hand-designed", {"mcd": REF_MCD}, cost=COST)
    fair = _exp("s", "searched", {"mcd": _shift(REF_MCD, -1.0)},
                cost={**COST, "train_steps": 700, "search_steps": 290, "global_proxy_steps": 30, "cpu_seconds": 104.0})
    data = _data([hand, fair])
    assert data.cost_warnings == []
    assert data.costs["searched"]["total"]["total_steps"] == 1020
    md = render_markdown(data)
    assert "## Cost" in md and "| searched | 1/1 | 700 | 290 | 30 | 1,020 | 104 | 0 | 60 |" in md
    assert 'id="cost-table"' in render_html(data)
    unfair = _exp("s", "searched", {"mcd": _shift(REF_MCD, -1.0)},
                  cost={**COST, "train_steps": 1000, "search_steps": 300, "global_proxy_steps": 1000,
                        "cpu_seconds": 230.0})
    with caplog.at_level(logging.WARNING, logger="rfspeech.compare"):
        data = _data([hand, unfair])
    assert len(data.cost_warnings) == 2
    assert "searched used 2,300 training steps (train + search + global proxy) per run, hand-designed 1,000 " \
           "(+130 %, more than 5 % apart)" in data.cost_warnings[0]
    assert "CPU + GPU seconds" in data.cost_warnings[1]
    assert sum("not an equal-budget comparison" in r.getMessage() for r in caplog.records) == 2
    md = render_markdown(data)
    assert md.index("> **Warning:** not an equal-budget") < md.index("## Arms")
    assert render_html(data).count('class="warning"') == 2
    missing = _data([hand, _exp("s", "searched", {"mcd": _shift(REF_MCD, -1.0)})])
    assert missing.cost_warnings == ["searched: no cost.json: the arms' budgets cannot be compared."]
    assert _data([_exp("h", "hand-designed", {"mcd": REF_MCD}), _exp("s", "searched", {"mcd": REF_MCD})]).costs == {
        "hand-designed": None, "searched": None}


# --------------------------------------------------------------------------- receptive field, look-ahead, speakers


def _folder(root: Path, name: str, arm: str, mcd: list[float], **files: object) -> Path:
    exp = root / name
    (exp / "eval").mkdir(parents=True)
    speakers = ["p225", "p225", "p225", "p226", "p226", "p226"]
    rows = _rows({"mcd": mcd}, speakers)
    summary = build_summary(rows, ["mcd"])
    (exp / "eval" / "summary.json").write_text(json.dumps(summary))
    (exp / "eval" / "metrics.csv").write_text(_to_csv(rows, [*BASE_COLUMNS, "mcd"]))
    (exp / "info.json").write_text(json.dumps({"name": name, "arm": arm, "seed": 1}))
    for fname, doc in files.items():
        (exp / fname.replace("_", ".")).write_text(json.dumps(doc))
    return exp


def test_receptive_field_and_look_ahead_per_arm_and_per_speaker(tmp_path: Path) -> None:
    hand = _folder(tmp_path, "hand", "hand-designed", REF_MCD,
                   rf_json={"r_min": 20.5, "r_max": 41.25, "units": "frames", "lookahead_frames": 10,
                            "history_frames": 31, "lookahead_ms": 116.1, "history_ms": 360.0},
                   cost_json=COST)
    import yaml

    searched = _folder(tmp_path, "searched", "searched", _shift(REF_MCD, -1.0), cost_json=COST)
    (searched / "structure.yaml").write_text(yaml.safe_dump({
        "structure": {"blocks.0.conv": 4, "blocks.1.conv": 9},
        "receptive_field": {"r_min": 30.0, "r_max": 30.0, "units": "frames"},
        "lookahead": {"lookahead_frames": 15, "history_frames": 15}}))
    (hand / "info.json").write_text(json.dumps({"name": "hand", "arm": "hand-designed", "seed": 1,
                                                "dilations": {"blocks.0.conv": 1, "blocks.1.conv": 3}}))
    data = write_report([hand, searched], tmp_path / "out", max_audio=0, max_spectrograms=0)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| `blocks.1.conv` | 3 | **9** |" in md
    assert "| receptive field | 20.5–41.25 frames | 30 frames |" in md
    assert ("| look-ahead / history | look-ahead 10 frames (116.1 ms) / history 31 frames (360.0 ms) | "
            "look-ahead 15 frames / history 15 frames |") in md
    assert "## Per speaker" in md and "| p226 | searched | 3 |" in md
    assert data.cost_warnings == []
    digest = json.loads((tmp_path / "out" / "report.json").read_text())
    assert digest["receptive_fields"]["searched"]["r_min"] == 30.0
    assert digest["experiments"][0]["context"]["lookahead_frames"] == 10
    assert digest["verdict"] == data.verdict
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="speaker-table"' in page and "look-ahead 15 frames" in page and "max-width:1400px" in page
    assert find_context({"context": {"history_frames": 3}}) == {"history_frames": 3}
    assert find_context({"r_min": 3}) is None and context_text(None) == "–"


# --------------------------------------------------------------------------- spectrogram


def test_reference_spectrogram_is_shown_whole(tmp_path: Path) -> None:
    from rfspeech.evaluate.report_figures import spectrogram_figure

    sr = 16000
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "ref.wav", 0.1 * rng.standard_normal(int(1.5 * sr)), sr)
    sf.write(tmp_path / "a.wav", 0.1 * rng.standard_normal(sr), sr)
    sf.write(tmp_path / "b.wav", 0.1 * rng.standard_normal(int(0.8 * sr)), sr)
    import matplotlib.pyplot as plt

    fig = spectrogram_figure([("reference", tmp_path / "ref.wav"), ("a", tmp_path / "a.wav"),
                              ("b", tmp_path / "b.wav")], "u")
    try:
        for ax in fig.axes:
            assert ax.get_xlim() == pytest.approx((0.0, 1.5))
        image = fig.axes[0].images[0]
        assert image.get_extent()[1] == pytest.approx(1.5)
    finally:
        plt.close(fig)
