"""Smoke tests of the benchmark harness: timing helpers, result layout, one tiny section end to end.

Nothing here asserts a speed: the figures depend on the machine and its load. The tests check the
method (interleaving, statistics, paired ratios), that the output files carry the documented keys,
and that the helper computations the tables rely on (SNR, conv taps, structures) are right.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/ is a top-level folder of the checkout, not part of the package
    sys.path.insert(0, str(REPO))

from bench import ALL_SECTIONS, SECTIONS  # noqa: E402
from bench import __main__ as bench_main  # noqa: E402
from bench.common import Timing, interleaved, paired_ratio, pin_threads, quantiles, round_sig  # noqa: E402

# ------------------------------------------------------------------------------------------ common


def test_quantiles_and_rounding() -> None:
    assert quantiles([3.0]) == (3.0, 3.0, 3.0)
    assert quantiles([4.0, 1.0, 3.0, 2.0, 5.0]) == (2.0, 3.0, 4.0)
    with pytest.raises(ValueError):
        quantiles([])
    assert round_sig(1.23456, 3) == 1.23
    assert round_sig(0.000123456, 2) == 0.00012
    assert round_sig(None) is None and round_sig(0.0) == 0.0 and math.isinf(round_sig(math.inf))


def test_interleaved_rotates_order_and_counts_rounds() -> None:
    calls: list[str] = []
    timings = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                           "c": lambda: calls.append("c")}, warmup=2, repeats=3)
    warm, timed = calls[:6], calls[6:]
    assert warm == ["a", "b", "c", "a", "b", "c"]
    # each round runs every candidate once, starting one further along each time
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {n: len(t.wall) for n, t in timings.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(len(t.cpu) == 3 and min(t.wall) >= 0.0 for t in timings.values())


def test_interleaved_min_seconds_adds_rounds_up_to_the_cap() -> None:
    timings = interleaved({"x": lambda: None}, warmup=0, repeats=2, min_seconds=60.0, max_repeats=5)
    assert len(timings["x"].wall) == 5


def test_paired_ratio_uses_rounds_pairwise() -> None:
    # a load burst in round 2 slows both sides; the paired ratio stays 2, the medians would not say so
    num = Timing("num", wall=[2.0, 20.0, 2.2])
    den = Timing("den", wall=[1.0, 10.0, 1.1])
    r = paired_ratio(num, den)
    assert r["ratio"] == pytest.approx(2.0) and r["min"] == pytest.approx(2.0) and r["max"] == pytest.approx(2.0)
    assert r["rounds"] == 3
    s = num.summary(per=4.0, unit="audio s")
    assert s["median_s"] == pytest.approx(2.2) and s["per_s_median"] == pytest.approx(4.0 / 2.2, rel=1e-3)
    assert s["per_s_q1"] <= s["per_s_median"] <= s["per_s_q3"]
    with pytest.raises(ValueError):
        paired_ratio(Timing("e"), den)


def test_paired_ratio_reports_cpu_spread_threads_and_load() -> None:
    num = Timing("num", wall=[2.0, 20.0, 2.2], cpu=[1.0, 1.2, 1.1], threads=1, load=[3.0, 5.0])
    den = Timing("den", wall=[1.0, 10.0, 1.1], cpu=[1.0, 1.0, 1.0], threads=1, load=[2.5, 4.0])
    r = paired_ratio(num, den)
    assert r["cpu_ratio"] == pytest.approx(1.1) and r["cpu_min"] == pytest.approx(1.0)
    assert r["cpu_max"] == pytest.approx(1.2) and r["cpu_q1"] <= r["cpu_ratio"] <= r["cpu_q3"]
    assert r["threads"] == 1 and r["load"] == [2.5, 5.0]
    t = interleaved({"x": lambda: sum(range(1000))}, warmup=0, repeats=2)["x"]
    assert t.threads == torch.get_num_threads() and (t.load is None or len(t.load) == 2)


def test_pin_threads_sets_torch_threads() -> None:
    assert pin_threads(1) == 1 == torch.get_num_threads()


# ------------------------------------------------------------------------------------------ helpers


def test_snr_db() -> None:
    from bench.synthesis import snr_db

    x = torch.randn(1, 1, 1000)
    assert snr_db(x, x.clone()) == math.inf
    assert snr_db(x, x * 1.1) == pytest.approx(20.0, abs=1e-4)  # error = 0.1·x → 20 dB


def test_twin_generators_have_identical_weights_and_outputs() -> None:
    from bench.synthesis import make_inputs, twin_generators

    a, b = twin_generators("hifigan_v2", 2)
    assert a is not b
    inputs = make_inputs(a, 0.02, seed=0)
    with torch.no_grad():
        assert torch.equal(a(*inputs), b(*inputs))
    b.remove_weight_norm()  # removing it from one twin must leave the other intact (no shared class)
    with torch.no_grad():
        assert torch.allclose(a(*inputs), b(*inputs), atol=1e-6)


def test_searched_structure_is_one_expand_step_and_merge_costs_taps() -> None:
    from bench.parity import build_arms, conv_taps, searched_structure
    from bench.synthesis import build_generator
    from rfspeech.search import expand_candidates

    gen = build_generator("hifigan_v2")
    s1, s2 = searched_structure(gen, seed=3), searched_structure(gen, seed=3)
    assert s1 == s2 and len(s1) == 72  # 4 stages × 3 resblocks × (3 dilated + 3 undilated) convs
    for path, d in s1.items():
        assert d in expand_candidates(gen.get_submodule(path).dilation[0], 3, 0.5)
    gens, _ = build_arms("hifigan_v2", ["hand", "single", "merge"])
    assert conv_taps(gens["single"]) == conv_taps(gens["hand"])
    assert conv_taps(gens["merge"]) > conv_taps(gens["hand"])


def test_equal_size_arm_matches_merge_in_shape_not_weights() -> None:
    from bench.parity import build_arms, conv_taps

    gens, structure = build_arms("hifigan_v2", ["hand", "merge", "equal"])
    merge, equal = gens["merge"], gens["equal"]
    assert conv_taps(equal) == conv_taps(merge)
    assert sum(p.numel() for p in equal.parameters()) == sum(p.numel() for p in merge.parameters())
    for path in structure:
        m, e = merge.get_submodule(path), equal.get_submodule(path)
        assert type(e) is type(m) and e.kernel_size == m.kernel_size and e.dilation == (1,)
        assert not hasattr(e, "merged_rates")  # no search code built it
    with pytest.raises(ValueError, match="merge"):
        build_arms("hifigan_v2", ["hand", "equal"])


def test_librosa_reference_writes_one_log_mel_per_file(tmp_path: Path) -> None:
    import soundfile as sf

    from bench.features import corpus_files, corpus_seconds, librosa_reference

    (tmp_path / "db" / "wavs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(tmp_path / "db" / "wavs" / f"u{i}.wav", (0.1 * rng.standard_normal(22050)).astype(np.float32), 22050)
    files = corpus_files(tmp_path / "db")
    assert [f.name for f in files] == ["u0.wav", "u1.wav"]
    assert corpus_seconds(files) == pytest.approx(2.0)
    librosa_reference(files, tmp_path / "out")
    mel = np.load(tmp_path / "out" / "u0.npy")
    assert mel.shape[0] == 80 and abs(mel.shape[1] - 22050 // 256) <= 1 and np.isfinite(mel).all()


# ------------------------------------------------------------------------------------------ entry point


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as e:
        bench_main.parse_args(["--sections", "nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--out", "x.txt"])
    assert bench_main.parse_args([]).sections == list(SECTIONS)
    assert bench_main.parse_args(["--all"]).sections == list(ALL_SECTIONS)
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--all", "--quick"])


def test_quick_parity_section_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = bench_main.main(["--quick", "--sections", "parity", "--threads", "1", "--repeats", "1",
                            "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("schema", "created", "machine", "threads", "load_average_start", "load_average_end", "rows",
                "sections", "errors", "merge_parity_ratio", "single_parity_ratio"):
        assert key in result, key
    assert result["threads"] == 1 and result["errors"] == {} and result["quick"] is True
    assert result["merge_parity_ratio"] > 0 and result["single_parity_ratio"] > 0
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(result["machine"])
    rows = result["rows"]
    assert {r["measure"].split(": searched ")[1].split(" /")[0] for r in rows} == {"single", "merge", "multiple"}
    models = result["sections"]["parity"]["models"]
    assert models["hifigan_v2"]["merge_vs_multiple_max_abs_diff"] < 1e-4  # merging keeps the function
    for r in rows:  # the protocol's columns: min and IQR for wall and CPU, rounds, threads, load
        assert {"min", "q1", "q3", "cpu_ratio", "cpu_min", "cpu_q1", "cpu_q3", "rounds", "threads", "load"} <= set(r)
        assert r["rounds"] == 1 and r["threads"] == 1 and r["min"] <= r["ratio"] and r["cpu_min"] <= r["cpu_ratio"]
    assert result["machine"]["cpu_flags"] is not None
    md = out.with_suffix(".md").read_text()
    assert "| measure | wall: median | min | IQR | CPU: median | min | IQR | rounds, threads, load |" in md
    assert sum(1 for line in md.splitlines() if line.startswith("| HiFi-GAN V2 inference")) == len(rows)
    assert '"merge_parity_ratio"' in md and "protocol: 1 warm-up call" in md


def test_failing_section_is_recorded_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(args: object, progress: object) -> dict:
        raise RuntimeError("planted failure")

    monkeypatch.setitem(bench_main.RUNNERS, "features", boom)
    out = tmp_path / "r.json"
    assert bench_main.main(["--sections", "features", "--threads", "1", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["errors"] == {"features": "RuntimeError: planted failure"}
    assert "planted failure" in out.with_suffix(".md").read_text()


def test_tiled_corpus_is_a_valid_ljspeech_tree_n_times_over(tmp_path: Path) -> None:
    from bench.features import MINI_CORPUS, corpus_files, corpus_seconds, tiled_corpus
    from rfspeech.data.corpora import scan_ljspeech

    tiled = tiled_corpus(MINI_CORPUS, 3, tmp_path / "tiled")
    entries, bad = scan_ljspeech(tiled, speaker="LJ")
    n = len(corpus_files(MINI_CORPUS))
    assert not bad and len(entries) == 3 * n == len({e.utt_id for e in entries})
    assert corpus_seconds(corpus_files(tiled)) == pytest.approx(3 * corpus_seconds(corpus_files(MINI_CORPUS)))
    assert all((tiled / "wavs").joinpath(f"{e.utt_id}.flac").is_symlink() for e in entries)


def test_limits_table_states_flops_achieved_and_the_yardstick() -> None:
    from bench.limits import markdown

    top = [{"op": "aten::mkldnn_convolution", "calls": 73, "self_ms": 90.0, "share": 0.9}]
    out = {"yardstick": {"fp32_1_thread": 40.0, "cores": 2, "bf16_1_thread": None},
           "models": {"hifigan_v1": {"gflop_per_audio_second": 53.0, "paths": {
               "torch whole": {"cpu_s_per_audio_s": 2.0, "gflops_per_s": 26.5}}}},
           "profile": {"threads": 1, "audio_seconds": 0.5, "conv_gflop": 26.4,
                       "rfspeech": {"total_ms": 100.0, "conv_share": 0.9, "conv_gflops_per_s": 29.3, "top": top}}}
    text = "\n".join(markdown(out))
    assert "**40 GFLOP/s** fp32 per CPU second on one thread (so at most 80 GFLOP/s on this machine's 2 cores); " \
           "bf16: this CPU has no bf16" in text
    # 26.5 / 40 of the yardstick; at 40 GFLOP/s 53 GFLOP per audio second bounds the speed at 0.755× real time
    assert "| HiFi-GAN V1 | 53 | torch whole | 2 | 26.5 | 66% | 0.755× (now 0.5×) |" in text
    assert "| rfspeech | 100 ms | 90.0% | 29.3 | mkldnn_convolution 90.0% |" in text


def _result(rows: list[dict]) -> dict:
    machine = {"cpu": "Test CPU", "cpu_flags": ["avx2"], "cores": 2, "memory_gib": 1.0, "torch": "2", "python": "3"}
    return {"created": "2026-12-07T00:00:00+00:00", "command": "python -m bench --all", "total_seconds": 1.0,
            "machine": machine, "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [1.5, 1.0, 1.0],
            "quick": False, "rows": rows, "sections": {}, "errors": {}}


def _row(measure: str, ratio: float, cpu: float) -> dict:
    from bench.common import Row

    stats = {"ratio": ratio, "q1": ratio, "q3": ratio, "min": ratio, "cpu_ratio": cpu, "cpu_q1": cpu, "cpu_q3": cpu,
             "cpu_min": cpu, "rounds": 7, "threads": 1, "load": [2.0, 3.0]}
    return Row("search", measure, ratio, "", "≤ 1.15", cpu <= 1.15, "", cpu_ratio=cpu, stats=stats).to_dict()


def test_rerun_moved_by_more_than_ten_percent_is_flagged() -> None:
    committed = _result([_row("a", 1.0, 1.0), _row("b", 1.0, 1.0), _row("gone", 1.0, 1.0)])
    now = _result([_row("a", 1.05, 1.09), _row("b", 1.0, 1.12), _row("new", 2.0, 2.0)])
    d = bench_main.compare(now, committed, "bench/results/old.json")
    assert d["compared"] == 2 and [r["measure"] for r in d["rows"]] == ["b"]
    assert d["rows"][0]["change"] == "CPU +12%"
    now["drift"] = d
    md = bench_main.markdown(now)
    assert "moved by more than 10% from the committed table (bench/results/old.json)" in md and "| b |" in md


def test_doc_block_is_regenerated_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nprose before\n")
    result = _result([_row("a", 1.0, 1.0)])
    json_path = tmp_path / "r.json"
    bench_main.update_doc(doc, result, json_path)
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nprose before\n") and bench_main.END in first
    assert bench_main.doc_source(first) == str(json_path)
    result["rows"] = [_row("a", 1.2, 1.3)]
    doc.write_text(first + "\nprose after\n")
    bench_main.update_doc(doc, result, json_path)
    second = doc.read_text()
    assert second.count(bench_main.END) == 1 and second.endswith("\nprose after\n") and "| a | 1.2 |" in second


def test_benchmarks_md_tables_are_the_output_of_the_committed_json() -> None:
    """BENCHMARKS.md's numbers come from `python -m bench --all`: its generated part re-renders from the JSON."""
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    src = bench_main.doc_source(text)
    assert src is not None, "BENCHMARKS.md has no generated part"
    result = json.loads((REPO / src).read_text(encoding="utf-8"))
    start = text.index("<!-- BEGIN GENERATED")
    end = text.index(bench_main.END) + len(bench_main.END)
    assert text[start:end] == bench_main.doc_block(result, src)
    assert result["all"] is True and not result["quick"]


def test_jobs_run_each_section_in_its_own_bench_process(tmp_path: Path) -> None:
    args = bench_main.parse_args(["--all", "--jobs", "2", "--repeats", "7"])
    cmd = bench_main._child_argv(args, "paths", tmp_path / "paths.json")
    assert cmd[1:5] == ["-m", "bench", "--sections", "paths"] and "--as-all" in cmd and "--no-doc" in cmd
    assert cmd[cmd.index("--repeats") + 1] == "7" and "--quick" not in cmd
    child = bench_main.parse_args(cmd[3:])
    assert child.all and child.sections == ["paths"] and child.no_doc
    assert set(bench_main.COST_ORDER) == set(ALL_SECTIONS)


def test_parts_reuse_finished_sections_and_refuse_other_options(tmp_path: Path, monkeypatch) -> None:
    """--parts: an interrupted full run goes on from the sections it finished, never mixing settings."""
    import subprocess

    parts = tmp_path / "parts"
    args = bench_main.parse_args(["--all", "--sections", "features,parity", "--parts", str(parts)])
    args.threads_given = False
    bench_main._check_parts(args)
    done = {"created": "2026-12-07T10:00:00+00:00", "rows": [{"section": "features", "measure": "m"}],
            "sections": {"features": {}}, "errors": {}, "total_seconds": 12.5}
    (parts / "features.json").write_text(json.dumps(done))
    (parts / "parity.json").write_text(json.dumps({**done, "errors": {"parity": "boom"}}))
    ran: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs):
        ran.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text(json.dumps({**done, "created": "2026-12-07T11:00:00+00:00", "sections": {"parity": {}}}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    results, errors, seconds = bench_main._run_jobs(args)
    assert [c[c.index("--sections") + 1] for c in ran] == ["parity"]  # the failed section ran again, not features
    assert results["features"]["created"].startswith("2026-12-07T10") and seconds["features"] == 12.5
    assert results["parity"]["created"].startswith("2026-12-07T11") and not errors

    other = bench_main.parse_args(["--all", "--sections", "features", "--parts", str(parts), "--repeats", "3"])
    with pytest.raises(SystemExit, match="other options"):
        bench_main._check_parts(other)
