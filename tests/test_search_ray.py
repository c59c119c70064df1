"""The global search on Ray (``search.global.backend=ray``): same choice as the local pool, a dead worker retried.

The Ray tests share one local Ray session (2 CPUs; Ray takes 10-30 s to start) and shut it down at the
end; they are ``heavy``. Without the optional ``ray`` package they skip; the configuration checks
around the backend run in the default suite either way.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_fixtures import REPO, make_prepared

from rfspeech.errors import ConfigError, RFSpeechError
from rfspeech.runs import search as pipeline
from rfspeech.search.backends import BACKENDS, BackendSettings, LocalBackend, make_backend
from rfspeech.search.ray_backend import RayBackend, RaySettings, ray_available
from rfspeech.train.cost import read_cost
from rfspeech.train.distributed import DistInfo

needs_ray = pytest.mark.skipif(not ray_available(), reason="the optional ray package is not installed")


def _compose(*overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return compose("search", overrides=["device=cpu", "progress=false", "tensorboard=false", "model=hifigan_debug",
                                            *overrides])


# ---------------------------------------------------------------------------------------------- fast checks
@pytest.mark.parametrize(("override", "message"), [
    ("search.global.backend=slurm", "search.global.backend: unknown global-search backend 'slurm'"),
    ("search.global.num_cpus=0", "search.global.num_cpus"),
    ("search.global.num_gpus=-1", "search.global.num_gpus"),
    ("search.global.max_retries=-1", "search.global.max_retries"),
    ("search.global.retry_exceptions=3", "search.global.retry_exceptions"),
])
def test_bad_backend_settings_are_one_line_errors(override: str, message: str) -> None:
    from rfspeech.runconfig import validate

    cfg = _compose("data_dir=x", "out_dir=y", "search=debug", override)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate("search", cfg)


def test_ray_is_a_registered_backend_and_local_stays_the_default(tmp_path: Path) -> None:
    g = _compose("data_dir=x", f"out_dir={tmp_path}", "search=debug").search["global"]
    assert g.backend == "local" and "ray" in BACKENDS
    assert isinstance(make_backend(g.backend), LocalBackend)
    assert make_backend(None).summary() == {"backend": "local", "n_workers": 1}


def test_ray_settings_come_from_the_search_global_keys() -> None:
    g = _compose("data_dir=x", "out_dir=y", "search=debug", "search.global.backend=ray",
                 "search.global.ray_address=auto", "search.global.num_gpus=0.5", "search.global.max_retries=1")
    from rfspeech.config import to_container

    ray = RaySettings.from_options(to_container(g.search["global"]))
    assert ray == RaySettings(address="auto", num_cpus=1.0, num_gpus=0.5, max_retries=1, retry_exceptions=False)
    with pytest.raises(ConfigError, match="search.global.num_cpus: must be > 0"):
        RaySettings(num_cpus=0)


def test_ray_backend_refuses_torchrun() -> None:
    with pytest.raises(ConfigError, match="without torchrun"):
        make_backend("ray", BackendSettings(distributed=True))


@needs_ray
def test_candidates_train_on_the_gpus_ray_gives_them() -> None:
    cpu_only = make_backend("ray", BackendSettings(options={"num_cpus": 2}))
    assert isinstance(cpu_only, RayBackend) and cpu_only.writes  # not started: no Ray yet
    assert cpu_only.candidate_device("auto") == "cpu" and cpu_only.candidate_threads() == 2
    with pytest.raises(ConfigError, match="num_gpus=0 with device=cuda"):
        cpu_only.candidate_device("cuda")
    gpu = make_backend("ray", BackendSettings(options={"num_gpus": 1}))
    assert gpu.candidate_device("auto") == "cuda"
    with pytest.raises(ConfigError, match="num_gpus=1 with device=cpu"):
        gpu.candidate_device("cpu")


def test_ray_backend_without_ray_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import rfspeech.search.ray_backend as rb

    monkeypatch.setattr(rb, "ray_available", lambda: False)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        make_backend("ray")


def test_backend_cost_adds_the_tasks_and_takes_out_rays_own_processes() -> None:
    assert pipeline.backend_cost({"backend": {"backend": "local", "n_workers": 2}}) == {"cpu_seconds": 0.0,
                                                                                         "gpu_seconds": 0.0}
    ray_summary = {"backend": {"backend": "ray", "cpu_seconds": 10.0, "gpu_seconds": 4.0,
                               "shutdown_cpu_seconds": 1.5}}
    assert pipeline.backend_cost(ray_summary) == {"cpu_seconds": 8.5, "gpu_seconds": 4.0}


# ---------------------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One small local Ray for every test here (Ray starts slowly); nothing of it is left behind."""
    if not ray_available():
        pytest.skip("the optional ray package is not installed")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data", n_train=4, n_dev=1, n_eval=0)


def _search(data: Path, out: Path, *overrides: str) -> dict[str, Any]:
    """The tiny debug search (global only, one thread per candidate so scores do not depend on where it ran)."""
    cfg = _compose(f"data_dir={data}", f"out_dir={out}", "search=debug", "search.local.enabled=false",
                   "search.global.candidate_steps=1", "search.global.finalists=1", "search.global.rescore_repeats=1",
                   "search.global.threads_per_worker=1", *overrides)
    pipeline.run_search(cfg, DistInfo())
    return json.loads((out / "search_log.json").read_text())


def _scores(out: Path) -> dict[str, Any]:
    state = json.loads((out / "global" / "global_search_state.json").read_text())
    return {json.dumps(e["candidate"]): (e["status"], e["score"]) for e in state["cache"]}


@pytest.mark.heavy
def test_ray_backend_chooses_like_the_local_pool(ray_session: None, data_dir: Path, tmp_path: Path) -> None:
    local = _search(data_dir, tmp_path / "local", "search.global.n_workers=1")
    on_ray = _search(data_dir, tmp_path / "ray", "search.global.backend=ray")
    best_local = yaml.safe_load((tmp_path / "local" / "global" / "best.yaml").read_text())["structure"]
    best_ray = yaml.safe_load((tmp_path / "ray" / "global" / "best.yaml").read_text())["structure"]
    assert best_ray == best_local
    a, b = _scores(tmp_path / "local"), _scores(tmp_path / "ray")
    assert a.keys() == b.keys()  # the same candidates bred, pruned and scored
    for key, (status, score) in a.items():
        assert b[key][0] == status
        assert b[key][1] == pytest.approx(score, rel=1e-6, abs=0.0)
    g = on_ray["global"]
    assert local["global"]["backend"] == {"backend": "local", "n_workers": 1}
    backend = g["backend"]
    assert backend["backend"] == "ray" and backend["failed"] == 0 and backend["retries"] == 0
    assert backend["tasks"] == backend["done"] == g["evaluations"] + g["rescored"]
    assert backend["cpu_seconds"] > 0 and sum(backend["nodes"].values()) == backend["tasks"]
    cost_local, cost_ray = read_cost(tmp_path / "local"), read_cost(tmp_path / "ray")
    assert cost_ray["global_proxy_steps"] == cost_local["global_proxy_steps"] == g["proxy_steps"]
    assert cost_ray["cpu_seconds"] >= backend["cpu_seconds"]  # the candidates' CPU time, measured in the tasks
    lines = [json.loads(x) for x in (tmp_path / "ray" / "global" / "global_search_log.jsonl").read_text().splitlines()]
    progress = [x["ray_progress"] for x in lines if "ray_progress" in x]
    assert progress and progress[-1]["done"] == progress[-1]["total"] and progress[-1]["running"] == 0
    # resume: the state file holds every score, so the search ends with the same choice and no Ray task
    (tmp_path / "ray" / "global" / "best.yaml").unlink()
    again = _search(data_dir, tmp_path / "ray", "search.global.backend=ray", "resume=true")
    assert again["global"]["best"] == g["best"] and again["global"]["backend"]["tasks"] == 0


@pytest.mark.heavy
def test_a_killed_ray_worker_is_retried_and_counted(ray_session: None, data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[RayBackend] = []
    real = BACKENDS["ray"]

    def keep(settings: BackendSettings) -> RayBackend:
        backend = real(settings)
        made.append(backend)
        return backend

    monkeypatch.setitem(BACKENDS, "ray", keep)
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:  # SIGKILL the worker process of the first candidate seen running, once
        while not stop.is_set() and not killed:
            running = made[0].running() if made else {}
            if running:
                pid = next(iter(running.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        log = _search(data_dir, tmp_path / "exp", "search.global.backend=ray", "search.global.generations=0")
    finally:
        stop.set()
        thread.join(10)
    assert killed, "no running candidate was seen"
    backend = log["global"]["backend"]
    assert backend["retries"] == 1 and backend["failed"] == 0  # the killed candidate ran again, and only it
    assert backend["done"] == backend["tasks"] == log["global"]["evaluations"] + log["global"]["rescored"]
    assert (tmp_path / "exp" / "structure.yaml").is_file() and log["global"]["best"]


@pytest.mark.heavy
def test_a_job_failing_after_its_retries_stops_the_search_after_the_jobs_before_it(ray_session: None) -> None:
    backend = RayBackend(ray=RaySettings(max_retries=0, progress_every_s=5.0))
    try:
        results = backend.map([(abs, (-1,)), (os._exit, (3,)), (abs, (-2,))])  # the second job's worker dies
        assert list(islice(results, 1)) == [1]  # what came before is delivered first (and checkpointed)
        with pytest.raises(RFSpeechError, match="job 1 failed after 1 attempt"):
            next(results)
        raised = backend.map([(int, ("not a number",))])
        with pytest.raises(ValueError, match="not a number"):  # a job's own exception comes back as itself
            next(raised)
    finally:
        backend.close()
    assert backend.summary()["failed"] == 2
