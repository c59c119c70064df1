"""rfspeech-compare: report.md / report.html / report.json from tiny experiment folders; browser rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.report import build_report, write_report
from rfspeech.evaluate.report_data import aggregate_arm, load_experiment
from rfspeech.evaluate.runner import evaluate_dirs

SR = 16000
DILATIONS = {"resblocks.0.convs1.0": 1, "resblocks.0.convs1.1": 3, "resblocks.0.convs1.2": 5}


def _speech() -> np.ndarray:
    import pysptk

    x, _ = sf.read(str(Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav"), dtype="float64")
    return x


def _make_exp(root: Path, ref: Path, name: str, arm: str | None, seed: int, noise: float, *,
              structure: dict | None = None, speed: bool = True) -> Path:
    exp = root / name
    rng = np.random.default_rng(seed)
    for p in sorted(ref.glob("*.wav")):
        x, _ = sf.read(p)
        (exp / "synth").mkdir(parents=True, exist_ok=True)
        sf.write(exp / "synth" / p.name, x + noise * rng.standard_normal(x.size), SR)
    evaluate_dirs(ref, exp / "synth", exp / "eval", metrics=["pesq", "stft"], jobs=1, progress=False)
    if arm is not None:
        (exp / "info.json").write_text(json.dumps({"name": name, "arm": arm, "seed": seed}))
    if speed:
        (exp / "synth" / "speed.json").write_text(json.dumps(
            {"x_real_time": 50.0 + seed, "rtf": 1 / (50.0 + seed), "device": "cpu", "threads": 2,
             "model": {"n_params": 123456, "dilations": DILATIONS}}))
    (exp / "rf.json").write_text(json.dumps({"r_min": 20.5, "r_max": 41.25, "units": "frames",
                                             "r_min_samples": 5248, "r_max_samples": 10560, "layers": []}))
    if structure is not None:
        yaml.safe_dump({"structure": structure, "settings": {"num_branches": 3}, "receptive_field": {"r_min": 30}},
                       open(exp / "structure.yaml", "w"))
    return exp


@pytest.fixture(scope="module")
def exps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("cmp")
    ref = root / "ref"
    ref.mkdir()
    x = _speech()
    for i in range(3):
        sf.write(ref / f"utt{i}.wav", x[i * SR // 2 : i * SR // 2 + SR], SR)
    searched = {"resblocks.0.convs1.0": 1, "resblocks.0.convs1.1": 4, "resblocks.0.convs1.2": 7}
    dirs = [
        _make_exp(root, ref, "hand_s1", "hand-designed", 1, 0.02),
        _make_exp(root, ref, "hand_s2", "hand-designed", 2, 0.021),
        _make_exp(root, ref, "search_s1", "searched", 1, 0.004, structure=searched),
        _make_exp(root, ref, "search_s2", None, 2, 0.005, structure=searched, speed=False),  # no info.json
    ]
    return root, dirs


@pytest.fixture(scope="module")
def report(exps: tuple[Path, list[Path]]) -> tuple[Path, object]:
    root, dirs = exps
    out = root / "report"
    data = write_report(dirs, out, max_audio=2, max_spectrograms=1)
    return out, data


def test_report_files_and_arms(report: tuple[Path, object]) -> None:
    out, data = report
    for name in ("report.md", "report.html", "report.json"):
        assert (out / name).is_file()
    assert list(data.arms) == ["hand-designed", "searched"]
    assert [len(v) for v in data.arms.values()] == [2, 2]  # search_s2 inferred "searched" from structure.yaml
    md = (out / "report.md").read_text()
    assert "| hand-designed | 2 |" in md and "| searched | 2 |" in md
    assert "## Differences vs hand-designed" in md
    assert "`resblocks.0.convs1.1` | 3 | **4** |" in md  # searched dilation beside the hand-designed one
    assert "20.5–41.25 frames (5248–10560 samples)" in md and "50.0× real time" not in md and "51.0× on cpu" in md
    assert "123.5 k" in md
    assert (out / "figures" / "spectrogram_utt0.png").read_bytes()[:4] == b"\x89PNG"


def test_arm_aggregation_over_seeds(report: tuple[Path, object]) -> None:
    _, data = report
    hand = data.arms["hand-designed"]
    stats = aggregate_arm(hand, ["pesq"])["metrics"]["pesq"]
    means = [e.summary["metrics"]["pesq"]["mean"] for e in hand]
    assert stats["over"] == "runs" and stats["n"] == 2
    assert stats["mean"] == pytest.approx(np.mean(means))
    assert stats["ci95"] == pytest.approx(12.7062 * np.std(means, ddof=1) / np.sqrt(2), rel=1e-4)
    single = aggregate_arm(hand[:1], ["pesq"])["metrics"]["pesq"]
    assert single["over"] == "utterances" and single["mean"] == pytest.approx(means[0])
    # Much less noise: the searched arm's PESQ is higher, but 2 runs per arm are too few for a verdict (and
    # search_s2 has no seed, so the runs are compared by their means, not paired by seed).
    paired = data.paired["searched"]["pesq"]
    assert paired["n_runs"] == [2, 2] and not paired["paired"] and paired["n_utts"] == 3
    assert paired["mean"] > 0 and paired["verdict"] == "too few runs"
    assert "too few runs for a verdict (n = 2; 3 needed)" in data.verdict[1]
    assert data.verdict[0].startswith("searched: 2 of 2 runs changed dilations from hand-designed (2 layers in all")
    digest = json.loads(Path(report[0] / "report.json").read_text())
    assert digest["paired_differences"]["searched"]["pesq"]["verdict"] == "too few runs"
    assert digest["statistics"]["unit"] == "run (seed)" and digest["statistics"]["min_runs"] == 3
    assert digest["arms"]["searched"]["runs"] == 2


def test_html_is_self_contained(report: tuple[Path, object]) -> None:
    out, _ = report
    page = (out / "report.html").read_text()
    # 2 utterances × (reference + 4 experiments), all embedded
    assert page.count("<audio") == 10
    assert len(re.findall(r'<audio controls preload="metadata" src="data:audio/wav;base64,', page)) == 10
    assert page.count('src="data:image/png;base64,') == 1
    for table in ("arm-table", "paired-table", "exp-table", "dilation-table", "audio-table"):
        assert f'id="{table}"' in page
    assert not re.search(r'(src|href)="(https?:|/|\.\./)', page)  # nothing outside the file


def test_missing_optional_pieces_and_errors(exps: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root, dirs = exps
    bare = tmp_path / "bare"
    (bare / "eval").mkdir(parents=True)
    shutil.copy(dirs[0] / "eval" / "summary.json", bare / "eval" / "summary.json")  # no csv, audio, info
    exp = load_experiment(bare)
    assert exp.arm == "hand-designed" and exp.rows is None and exp.speed is None and exp.n_params is None
    data = build_report([bare], max_audio=2)
    assert data.paired == {} and data.utterances == [] and data.figures == []
    write_report([bare], tmp_path / "r")
    assert "<audio" not in (tmp_path / "r" / "report.html").read_text()
    with pytest.raises(DataError, match="summary.json"):
        load_experiment(tmp_path)
    with pytest.raises(ConfigError, match="reference_arm"):
        build_report([bare], reference_arm="nonexistent")


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_cli(exps: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, dirs = exps
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.compare", f"exps=[{dirs[0]},{dirs[2]}]",
                        f"out_dir={tmp_path / 'rep'}", "max_audio=1", "max_spectrograms=0"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stdout
    assert (tmp_path / "rep" / "report.html").read_text().count("<audio") == 3
    bad = subprocess.run([sys.executable, "-m", "rfspeech.bin.compare", f"exps=[{tmp_path / 'nope'}]",
                          f"out_dir={tmp_path / 'rep2'}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "rep2" / "report.html").exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


_PROBE = """<script>
window.addEventListener("load", () => {
  const players = [...document.querySelectorAll("audio")];
  let ready = 0;
  for (const a of players) {
    a.addEventListener("loadedmetadata", () => {
      if (++ready === players.length) {
        const pre = document.createElement("pre");
        pre.id = "durations";
        pre.textContent = players.map(p => p.duration.toFixed(3)).join(",");
        document.body.appendChild(pre);
      }
    });
    a.load();
  }
});
</script>"""


@pytest.mark.browser
def test_html_renders_in_headless_chromium(report: tuple[Path, object], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed")
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # The DOM the browser built (not just the file): players, tables with their rows, the figure.
    assert html.count("<audio") == 10
    assert len(re.findall(r'<tr>', html.split('id="arm-table"')[1].split("</table>")[0])) == 3
    assert 'id="dilation-table"' in html and "<img" in html
    # The browser decodes every embedded clip: a probe script (in a copy of the page) lists their durations.
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="durations">([^<]*)</pre>', dom.stdout)
    assert found, dom.stdout[-500:]
    durations = [float(v) for v in found.group(1).split(",")]
    assert len(durations) == 10 and all(v == pytest.approx(1.0, abs=0.01) for v in durations)
    # Every table fits a 1400 px page: a probe measures each table's laid-out width.
    width_probe = tmp_path / "width.html"
    width_probe.write_text((out / "report.html").read_text().replace("</body>", """<script>
window.addEventListener("load", () => {
  const pre = document.createElement("pre"); pre.id = "widths";
  pre.textContent = [...document.querySelectorAll("table")].map(t => t.id + ":" + t.scrollWidth).join(",");
  document.body.appendChild(pre);
});</script></body>"""))
    dom = subprocess.run([browser, *flags, "--window-size=1400,2000", "--virtual-time-budget=5000", "--dump-dom",
                          width_probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="widths">([^<]*)</pre>', dom.stdout)
    assert found, dom.stdout[-500:]
    widths = {k: int(v) for k, v in (item.rsplit(":", 1) for item in found.group(1).split(","))}
    assert widths and max(widths.values()) <= 1400, widths
    shot = tmp_path / "shot.png"
    r = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.stat().st_size > 10_000


def test_small_differences_keep_their_digits_and_fields_round_to_four() -> None:
    from rfspeech.evaluate.report_text import num as _num
    from rfspeech.evaluate.report_text import rf_text as _rf_text

    assert _num(0.0004, "f0_rmse") == "0.0004"  # significant but below the column's 2 decimals
    assert _num(0.0, "f0_rmse") == "0.00" and _num(17.754, "f0_rmse") == "17.75"
    rf = {"r_min": 8.171875, "r_max": 26.453125, "units": "frames", "r_min_samples": 2092, "r_max_samples": 6772}
    assert _rf_text(rf) == "8.172–26.45 frames (2092–6772 samples)"
