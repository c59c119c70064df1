"""RF-Next's global search: an evolutionary search over coarse dilation combinations.

Each candidate is a ``{gene: dilation}`` mapping (one gene per dilated layer, or per stack/group
of layers to keep the space small, see :func:`expand_groups`), scored by a cheap proxy the caller
supplies (e.g. a short training run from a shared initialisation, validation mel L1; lower is
better). Tournament or roulette selection, two-point crossover, per-gene mutation, elitism,
optional random immigrants; a cache guarantees no structure is scored twice, candidates can be
pruned before scoring (e.g. receptive field past the border of the training segment,
:class:`ReceptiveFieldPrune`), scoring runs in a process pool, and the state is checkpointed
after every evaluation so an interrupted search resumes where it stopped, taking exactly the
same decisions.

One proxy score per structure is noisy (a short training run): with noise of sd 2 on a synthetic
score the structure reported best had a true score of 5 against 3.25. So the top ``finalists``
are re-scored ``rescore_repeats`` times (other seeds or longer proxy runs, ``rescore_fn``) and the
best mean wins; both scores and the score noise (the spread of repeated evaluations of one
structure) go to the result and the log (RFNext re-trains its top 8 longer). Workers run on
distinct devices (:func:`rfspeech.search.backends.worker_device`); the jobs run where the backend
puts them (:mod:`rfspeech.search.backends`: this process, a process pool, and under torchrun the ranks
share the population, each scoring its share, all recording every score).
"""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_write_text
from rfspeech.search.backends import Backend, BackendSettings, LocalBackend

log = logging.getLogger("rfspeech.search")

STATE_FILE = "global_search_state.json"
LOG_FILE = "global_search_log.jsonl"
_STATE_VERSION = 1

Candidate = tuple[int, ...]


@dataclass
class Evaluation:
    """One scored (or pruned) candidate."""

    structure: dict[str, int]
    score: float
    status: str  # "ok", "pruned" or "failed" (non-finite score)
    reason: str | None = None
    generation: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"structure": self.structure, "score": _json_float(self.score), "status": self.status,
                "reason": self.reason, "generation": self.generation, "seconds": round(self.seconds, 4)}


@dataclass
class GlobalSearchResult:
    """Outcome of :meth:`GlobalSearch.run`.

    Attributes:
        best: the best structure found.
        best_score: its score.
        history: every evaluation (scored, pruned or failed), in the order they were made.
        generations: per generation ``{generation, best, best_score, mean_score, scored}``.
        evaluations: number of structures actually scored (cache hits and prunes excluded).
        search_best: the best structure by its single search score (equals ``best`` without
            re-scoring).
        search_best_score: that single score.
        finalists: per re-scored finalist ``{structure, search_score, rescores, rescore_mean,
            rescore_std}``, best mean first (empty without re-scoring).
        score_noise: pooled standard deviation of the repeated scores of one structure (None
            without at least two repeats); ``best_score`` is then the winner's mean re-score.
    """

    best: dict[str, int]
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    search_best: dict[str, int] | None = None
    search_best_score: float | None = None
    finalists: list[dict[str, Any]] = field(default_factory=list)
    score_noise: float | None = None


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else ("-inf" if x < 0 else "nan"))


def _from_json_float(x: Any) -> float:
    return float(x)


def expand_groups(choice: Mapping[str, int], groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Turn a per-group choice into a per-layer structure.

    Args:
        choice: ``{gene: dilation}`` from the search.
        groups: ``{gene: [module paths]}``; genes not in ``groups`` are module paths themselves.

    Returns:
        ``{module path: dilation}``.
    """
    out: dict[str, int] = {}
    for gene, d in choice.items():
        for path in groups.get(gene, [gene]):
            out[path] = int(d)
    return out


@dataclass(frozen=True)
class GlobalSearchConfig:
    """The evolutionary algorithm's settings (``search.global`` of ``rfspeech-search``).

    Attributes:
        population: individuals per generation.
        generations: breeding rounds after the initial population (``generations + 1``
            populations are evaluated).
        mutation: per-gene mutation probability (RF-Next: 0.2).
        crossover: probability that a child comes from two-point crossover (else a parent copy).
        elite: best individuals carried over unchanged.
        selection: ``"tournament"`` or ``"roulette"``.
        tournament_size: contestants per tournament.
        immigrants: fraction of each new generation drawn at random (fresh genes).
        seed: random seed (the whole search is deterministic given it).
        seeds: structures put into the initial population (e.g. the hand-designed pattern);
            their values are added to the space when missing.
        finalists: re-score the best this many structures before choosing (0: off).
        rescore_repeats: re-scores per finalist; the best mean wins.
        max_tries: attempts to breed a new (unscored, unpruned) child before accepting a repeat.
        out_dir: where the state (``global_search_state.json``) and the evaluation log
            (``global_search_log.jsonl``) go; None keeps everything in memory.
        resume: continue from ``out_dir``'s state when present.

    Raises:
        ConfigError: a value out of range.
    """

    population: int = 20
    generations: int = 10
    mutation: float = 0.2
    crossover: float = 0.9
    elite: int = 2
    selection: str = "tournament"
    tournament_size: int = 3
    immigrants: float = 0.0
    seed: int = 0
    seeds: Sequence[Mapping[str, int]] | None = None
    finalists: int = 0
    rescore_repeats: int = 3
    max_tries: int = 50
    out_dir: str | Path | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        if self.selection not in ("tournament", "roulette"):
            raise ConfigError(f"global search: selection must be 'tournament' or 'roulette', got {self.selection!r}")
        if int(self.population) < 2:
            raise ConfigError(f"global search: population must be >= 2, got {self.population}")
        if int(self.generations) < 0:
            raise ConfigError(f"global search: generations must be >= 0, got {self.generations}")
        if not 0.0 <= float(self.mutation) <= 1.0 or not 0.0 <= float(self.crossover) <= 1.0:
            raise ConfigError("global search: mutation and crossover are probabilities in [0, 1]")
        if not 0.0 <= float(self.immigrants) < 1.0:
            raise ConfigError(f"global search: immigrants must be in [0, 1), got {self.immigrants}")
        if int(self.finalists) < 0 or int(self.rescore_repeats) < 1:
            raise ConfigError(f"global search: finalists must be >= 0 and rescore_repeats >= 1, got {self.finalists}, "
                              f"{self.rescore_repeats}")


class GlobalSearch:
    """Evolutionary search over dilation combinations (lower score is better).

    Args:
        space: ``{gene: [allowed dilations]}``; a gene is a layer path or a group name.
        score_fn: ``structure -> score`` (lower is better). Must be picklable for a backend with
            worker processes (a module-level function, a ``functools.partial`` of one, or an object).
            Return ``inf``/``nan`` for a candidate that cannot be trained; exceptions stop the search
            (evaluations so far are checkpointed, so it resumes).
        config: the algorithm's settings (:class:`GlobalSearchConfig`; None: its defaults).
        prune_fn: ``structure -> reason or None``; a candidate with a reason is never scored.
        rescore_fn: ``(structure, repeat) -> score`` for the re-scoring of the finalists (e.g. another
            seed per repeat, or a longer proxy run); default ``score_fn(structure)`` (only useful when it
            is itself random). Picklable as ``score_fn``.
        backend: where the scoring jobs run (:mod:`rfspeech.search.backends`; None: in this process).
            Under torchrun its ``distributed`` setting makes every rank run this search with the same
            settings and score its share of each generation; the scores are gathered so all ranks take
            the same decisions (the backend's ``writes`` process writes the state).
    """

    def __init__(
        self,
        space: Mapping[str, Sequence[int]],
        score_fn: Callable[[dict[str, int]], float],
        config: GlobalSearchConfig | None = None,
        prune_fn: Callable[[dict[str, int]], str | None] | None = None,
        rescore_fn: Callable[[dict[str, int], int], float] | None = None,
        backend: Backend | None = None,
    ) -> None:
        config = config or GlobalSearchConfig()
        if not space:
            raise ConfigError("global search: the search space is empty")
        self.keys = [str(k) for k in space]
        choices: dict[str, list[int]] = {}
        for k, values in space.items():
            vals = sorted({int(v) for v in values})
            if not vals or vals[0] < 1:
                raise ConfigError(f"global search: space[{k!r}] must list dilations >= 1, got {list(values)}")
            choices[str(k)] = vals
        self.seeds: list[Candidate] = []
        for s in config.seeds or []:
            missing = [k for k in self.keys if k not in s]
            extra = [k for k in s if k not in choices]
            if missing or extra:
                raise ConfigError(f"global search: seed structure does not match the space "
                                  f"(missing {missing}, unknown {extra})")
            for k in self.keys:
                d = int(s[k])
                if d < 1:
                    raise ConfigError(f"global search: seed dilation {k}={d} must be >= 1")
                if d not in choices[k]:
                    choices[k] = sorted([*choices[k], d])
            self.seeds.append(tuple(int(s[k]) for k in self.keys))
        self.choices = choices
        self.config = config
        self.score_fn = score_fn
        self.population = int(config.population)
        self.generations = int(config.generations)
        self.mutation = float(config.mutation)
        self.crossover = float(config.crossover)
        self.elite = max(0, min(int(config.elite), self.population))
        self.selection = config.selection
        self.tournament_size = max(1, int(config.tournament_size))
        self.immigrants = float(config.immigrants)
        self.seed = int(config.seed)
        self.prune_fn = prune_fn
        self.backend = backend if backend is not None else LocalBackend(BackendSettings())
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.resume = bool(config.resume)
        self.max_tries = max(1, int(config.max_tries))
        self.finalists = int(config.finalists)
        self.rescore_fn = rescore_fn
        self.rescore_repeats = int(config.rescore_repeats)
        self.rescored: dict[tuple[Candidate, int], float] = {}
        self.cache: dict[Candidate, Evaluation] = {}
        self.history: list[Evaluation] = []
        self.generation_log: list[dict[str, Any]] = []
        self.evaluations = 0

    # -- encoding --------------------------------------------------------------------------

    def decode(self, cand: Candidate) -> dict[str, int]:
        return dict(zip(self.keys, cand))

    @property
    def space_size(self) -> int:
        return math.prod(len(v) for v in self.choices.values())

    def _settings(self) -> dict[str, Any]:
        return {"keys": self.keys, "choices": self.choices, "population": self.population,
                "seed": self.seed, "selection": self.selection}

    # -- scoring ---------------------------------------------------------------------------

    def _prune_reason(self, cand: Candidate) -> str | None:
        if self.prune_fn is None:
            return None
        reason = self.prune_fn(self.decode(cand))
        return str(reason) if reason else None

    def _record(self, cand: Candidate, ev: Evaluation) -> None:
        self.cache[cand] = ev
        self.history.append(ev)
        self._log_line(ev.to_dict())

    def _log_line(self, entry: dict[str, Any]) -> None:
        if self.out_dir is not None and self.backend.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def _viable(self, cand: Candidate, generation: int) -> bool:
        """Not pruned (pruning recorded in the cache, checked once per structure)."""
        ev = self.cache.get(cand)
        if ev is not None:
            return ev.status != "pruned"
        reason = self._prune_reason(cand)
        if reason is not None:
            self._record(cand, Evaluation(self.decode(cand), math.inf, "pruned", reason, generation))
            log.info("global search: pruned %s: %s", self.decode(cand), reason)
            return False
        return True

    def _evaluate(self, population: list[Candidate], generation: int) -> None:
        todo: list[Candidate] = []
        for cand in population:
            if cand not in self.cache and cand not in todo and self._viable(cand, generation):
                todo.append(cand)
        if not todo:
            return
        # Record in submission order so the history and checkpoints do not depend on timing;
        # each result is checkpointed as soon as it and all earlier ones are in.
        calls = [(_timed_score, (self.score_fn, self.decode(c))) for c in todo]
        for cand, (score, seconds) in zip(todo, self.backend.map(calls)):
            self._scored(cand, score, generation, seconds)

    def _rescore(self, ok: list[tuple[Candidate, Evaluation]]) -> tuple[list[dict[str, Any]], float | None]:
        """Re-score the best ``finalists`` structures ``rescore_repeats`` times; best mean first, and the noise."""
        ranked = sorted(ok, key=lambda item: item[1].score)[: self.finalists]
        fn = self.rescore_fn if self.rescore_fn is not None else _Repeat(self.score_fn)
        pending = [(c, r) for c, _ in ranked for r in range(self.rescore_repeats) if (c, r) not in self.rescored]
        calls = [(_timed_rescore, (fn, self.decode(c), r)) for c, r in pending]
        for (cand, r), (score, seconds) in zip(pending, self.backend.map(calls)):
            self.rescored[(cand, r)] = score if math.isfinite(score) else math.inf
            self._log_line({"rescore": self.decode(cand), "repeat": r, "score": _json_float(score),
                            "seconds": round(seconds, 4)})
            self._write()
        out = []
        variances = []
        for cand, ev in ranked:
            vals = [self.rescored[(cand, r)] for r in range(self.rescore_repeats)]
            finite = all(math.isfinite(v) for v in vals)
            mean = statistics.fmean(vals) if finite else math.inf
            std = statistics.stdev(vals) if finite and len(vals) > 1 else 0.0
            if finite and len(vals) > 1:
                variances.append(std ** 2)
            out.append({"structure": self.decode(cand), "search_score": ev.score, "rescores": vals,
                        "rescore_mean": mean, "rescore_std": std})
        out.sort(key=lambda f: f["rescore_mean"])
        noise = math.sqrt(statistics.fmean(variances)) if variances else None
        self._log_line({"finalists": [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in f.items()
                                       if k != "rescores"} for f in out],
                        "score_noise": None if noise is None else _json_float(noise)})
        if out:
            log.info("global search: re-scored %d finalists x %d: best %s (mean %.4g; its search score %.4g; "
                     "best by search score %s = %.4g); score noise sd %s", len(out), self.rescore_repeats,
                     out[0]["structure"], out[0]["rescore_mean"], out[0]["search_score"], self.decode(ranked[0][0]),
                     ranked[0][1].score, "n/a" if noise is None else f"{noise:.4g}")
        return out, noise

    def _scored(self, cand: Candidate, score: float, generation: int, seconds: float) -> None:
        status = "ok" if math.isfinite(score) else "failed"
        if status == "failed":
            log.warning("global search: %s scored %s (treated as worst)", self.decode(cand), score)
            score = math.inf
        self.evaluations += 1
        self._record(cand, Evaluation(self.decode(cand), score, status, None, generation, seconds))
        self._save_cache()

    def score_of(self, cand: Candidate) -> float:
        ev = self.cache.get(cand)
        return math.inf if ev is None else ev.score

    # -- breeding --------------------------------------------------------------------------

    def _random(self, rng: random.Random) -> Candidate:
        return tuple(rng.choice(self.choices[k]) for k in self.keys)

    def _initial(self, rng: random.Random) -> list[Candidate]:
        pop: list[Candidate] = []
        for s in self.seeds:
            if s not in pop and self._viable(s, 0):
                pop.append(s)
        target = min(self.population, self.space_size)
        tries = 0
        while len(pop) < target and tries < self.max_tries * self.population:
            tries += 1
            cand = self._random(rng)
            if cand not in pop and self._viable(cand, 0):
                pop.append(cand)
        if not pop:
            raise ConfigError("global search: every candidate tried for the initial population was pruned")
        return pop[: self.population]

    def _select(self, scored: list[Candidate], rng: random.Random) -> Candidate:
        if self.selection == "tournament":
            contestants = [rng.choice(scored) for _ in range(self.tournament_size)]
            return min(contestants, key=self.score_of)
        scores = [self.score_of(c) for c in scored]
        finite = [s for s in scores if math.isfinite(s)]
        if not finite:
            return rng.choice(scored)
        hi, lo = max(finite), min(finite)
        eps = 1e-12 + 0.01 * (hi - lo)
        weights = [(hi - s) + eps if math.isfinite(s) else 0.0 for s in scores]
        return rng.choices(scored, weights=weights, k=1)[0]

    def _cross(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        n = len(a)
        if rng.random() >= self.crossover or n == 1:
            return a if n > 1 or rng.random() < 0.5 else b
        if n == 2:
            return (a[0], b[1])
        i, j = sorted(rng.sample(range(1, n), 2))
        return a[:i] + b[i:j] + a[j:]

    def _mutate(self, cand: Candidate, rng: random.Random, rate: float) -> Candidate:
        out = list(cand)
        for idx, k in enumerate(self.keys):
            options = self.choices[k]
            if len(options) > 1 and rng.random() < rate:
                out[idx] = rng.choice([v for v in options if v != out[idx]])
        return tuple(out)

    def _breed(self, pop: list[Candidate], generation: int, rng: random.Random) -> list[Candidate]:
        ranked = sorted(dict.fromkeys(pop), key=self.score_of)
        scored = [c for c in ranked if math.isfinite(self.score_of(c))] or ranked
        nxt: list[Candidate] = ranked[: self.elite]
        n_imm = int(round(self.immigrants * self.population))
        while len(nxt) < self.population - n_imm:
            child = None
            for attempt in range(self.max_tries):
                a, b = self._select(scored, rng), self._select(scored, rng)
                # Later attempts mutate harder, to get away from structures already scored.
                rate = self.mutation if attempt < self.max_tries // 2 else max(self.mutation, 0.5)
                c = self._mutate(self._cross(a, b, rng), rng, rate)
                if c in nxt or not self._viable(c, generation):
                    continue
                child = c
                if c not in self.cache:
                    break
            if child is None:
                break  # the space is (nearly) exhausted around the population
            nxt.append(child)
        tries = 0
        while len(nxt) < self.population and tries < self.max_tries * max(1, n_imm):
            tries += 1
            c = self._random(rng)
            if c not in nxt and self._viable(c, generation):
                nxt.append(c)
        return nxt

    # -- checkpoints -----------------------------------------------------------------------

    def _state_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / STATE_FILE

    def _save_state(self, generation: int, pop: list[Candidate], rng: random.Random) -> None:
        self._gen_state = {"generation": generation, "population": [list(c) for c in pop],
                           "rng": _rng_to_json(rng.getstate())}
        self._write()

    def _save_cache(self) -> None:
        self._write()

    def _write(self) -> None:
        path = self._state_path()
        if path is None or not self.backend.writes:
            return
        doc = {
            "version": _STATE_VERSION,
            "settings": self._settings(),
            "state": getattr(self, "_gen_state", None),
            "generations": self.generation_log,
            "evaluations": self.evaluations,
            "cache": [{"candidate": list(c), **ev.to_dict()} for c, ev in self.cache.items()],
            "rescored": [{"candidate": list(c), "repeat": r, "score": _json_float(v)}
                         for (c, r), v in self.rescored.items()],
        }
        atomic_write_text(path, json.dumps(doc) + "\n")

    def _load_state(self) -> tuple[int, list[Candidate], random.Random] | None:
        path = self._state_path()
        if path is None or not self.resume or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            settings = doc["settings"]
            state = doc["state"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: unreadable global search state ({type(e).__name__}: {e})") from None
        mine = json.loads(json.dumps(self._settings()))
        if settings != mine:
            raise ConfigError(f"{path}: global search state was written with other settings "
                              f"(space, population, seed or selection differ); use another out_dir or resume=false")
        for entry in doc.get("cache", []):
            cand = tuple(int(v) for v in entry["candidate"])
            ev = Evaluation(self.decode(cand), _from_json_float(entry["score"]), entry["status"], entry.get("reason"),
                            int(entry.get("generation", 0)), float(entry.get("seconds", 0.0)))
            self.cache[cand] = ev
            self.history.append(ev)
        self.generation_log = list(doc.get("generations", []))
        self.evaluations = int(doc.get("evaluations", 0))
        for entry in doc.get("rescored", []):
            self.rescored[(tuple(int(v) for v in entry["candidate"]), int(entry["repeat"]))] = float(entry["score"])
        if state is None:
            return None
        rng = random.Random()
        rng.setstate(_rng_from_json(state["rng"]))
        self._gen_state = state
        log.info("global search: resuming at generation %d from %s (%d structures cached)",
                 state["generation"], path, len(self.cache))
        return int(state["generation"]), [tuple(int(v) for v in c) for c in state["population"]], rng

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> GlobalSearchResult:
        """Run (or resume) the search; return the best structure and the history.

        The backend is closed once, when the search ends (after the finalists' re-scoring, or on an
        error): a backend that starts a cluster session or a pool keeps it for the whole search.
        """
        try:
            return self._run()
        finally:
            self.backend.close()

    def _run(self) -> GlobalSearchResult:
        restored = self._load_state()
        if restored is None:
            rng = random.Random(self.seed)
            pop = self._initial(rng)
            generation = 0
            self._save_state(generation, pop, rng)
        else:
            generation, pop, rng = restored
        done = {g["generation"] for g in self.generation_log}
        try:
            from tqdm import tqdm

            bar = tqdm(total=self.generations + 1, initial=generation, desc="global search", unit="gen",
                       disable=None)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
        try:
            while True:
                self._evaluate(pop, generation)
                if generation not in done:
                    self.generation_log.append(self._summary(pop, generation))
                    done.add(generation)
                    self._write()
                if bar is not None:
                    bar.update(1)
                    best = self.generation_log[-1]
                    bar.set_postfix(best=f"{best['best_score']:.4g}" if isinstance(best["best_score"], float)
                                    else best["best_score"])
                if generation >= self.generations:
                    break
                pop = self._breed(pop, generation + 1, rng)
                generation += 1
                self._save_state(generation, pop, rng)
        finally:
            if bar is not None:
                bar.close()
        ok = [(c, ev) for c, ev in self.cache.items() if ev.status == "ok"]
        if not ok:
            raise ConfigError("global search: no candidate got a finite score")
        best_c, best_ev = min(ok, key=lambda item: item[1].score)
        result = GlobalSearchResult(best=self.decode(best_c), best_score=best_ev.score,
                                    history=[ev.to_dict() for ev in self.history],
                                    generations=list(self.generation_log), evaluations=self.evaluations,
                                    search_best=self.decode(best_c), search_best_score=best_ev.score)
        if self.finalists:
            result.finalists, result.score_noise = self._rescore(ok)
            if result.finalists and math.isfinite(result.finalists[0]["rescore_mean"]):
                result.best = dict(result.finalists[0]["structure"])
                result.best_score = result.finalists[0]["rescore_mean"]
        return result

    def _summary(self, pop: list[Candidate], generation: int) -> dict[str, Any]:
        scores = [self.score_of(c) for c in pop]
        finite = [s for s in scores if math.isfinite(s)]
        best = min(pop, key=self.score_of)
        out = {"generation": generation, "best": self.decode(best), "best_score": _json_float(self.score_of(best)),
               "mean_score": _json_float(sum(finite) / len(finite)) if finite else "nan",
               "scored": self.evaluations}
        log.info("global search generation %d: best %s = %s", generation, out["best"], out["best_score"])
        return out


def _timed_score(fn: Callable[[dict[str, int]], float], structure: dict[str, int]) -> tuple[float, float]:
    t0 = time.perf_counter()
    score = float(fn(structure))
    return score, time.perf_counter() - t0


def _timed_rescore(fn: Callable[[dict[str, int], int], float], structure: dict[str, int],
                   repeat: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    score = float(fn(structure, repeat))
    return score, time.perf_counter() - t0


class _Repeat:
    """``(structure, repeat) -> score_fn(structure)`` (picklable)."""

    def __init__(self, fn: Callable[[dict[str, int]], float]) -> None:
        self.fn = fn

    def __call__(self, structure: dict[str, int], repeat: int) -> float:
        return float(self.fn(structure))


def _rng_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (int(version), tuple(int(v) for v in internal), gauss)


class ReceptiveFieldPrune:
    """A ``prune_fn`` that skips candidates putting layers past the border of the training segment.

    Builds the model, applies the candidate (``single`` mode) and asks :func:`rfspeech.rf.analyze`
    which layers the segment makes unproductive (their receptive field already exceeds it).

    Args:
        model_fn: builds a fresh model (e.g. the generator from its config).
        segment: training segment in model input units (mel frames for a vocoder).
        groups: ``{gene: [module paths]}`` when genes are groups (see :func:`expand_groups`).
        max_unproductive: candidates with more unproductive layers than this are pruned.
    """

    def __init__(self, model_fn: Callable[[], Any], segment: float, groups: Mapping[str, Sequence[str]] | None = None,
                 max_unproductive: int = 0) -> None:
        self.model_fn = model_fn
        self.segment = float(segment)
        self.groups = dict(groups or {})
        self.max_unproductive = int(max_unproductive)

    def __call__(self, structure: dict[str, int]) -> str | None:
        from rfspeech.rf import analyze
        from rfspeech.search.model import apply_structure

        model = self.model_fn()
        apply_structure(model, expand_groups(structure, self.groups), mode="single")
        report = analyze(model, segment=self.segment, hints=False)
        if len(report.unproductive) > self.max_unproductive:
            return (f"{len(report.unproductive)} unproductive layer(s) for a {self.segment:g}-unit segment "
                    f"(first: {report.unproductive[0]}; r_min {report.r_min:.4g})")
        return None


class LookaheadPrune:
    """A ``prune_fn`` that skips candidates looking further ahead than a budget (latency-bounded search).

    Builds the model, applies the candidate (``single`` mode) and measures the right side of the
    analytic receptive field (:func:`rfspeech.search.fields.lookahead`).

    Args:
        model_fn: builds a fresh model.
        max_lookahead: budget in units of ``lookahead_input`` (mel frames for a vocoder).
        groups: ``{gene: [module paths]}`` when genes are groups.
        lookahead_input: ``auto`` (the mel input) or an input name.
        then: another ``prune_fn`` asked when the budget holds (e.g. :class:`ReceptiveFieldPrune`).
    """

    def __init__(self, model_fn: Callable[[], Any], max_lookahead: float,
                 groups: Mapping[str, Sequence[str]] | None = None, lookahead_input: str = "auto",
                 then: Callable[[dict[str, int]], str | None] | None = None) -> None:
        self.model_fn = model_fn
        self.max_lookahead = float(max_lookahead)
        self.groups = dict(groups or {})
        self.lookahead_input = lookahead_input
        self.then = then

    def __call__(self, structure: dict[str, int]) -> str | None:
        from rfspeech.search.fields import lookahead
        from rfspeech.search.model import apply_structure

        model = self.model_fn()
        apply_structure(model, expand_groups(structure, self.groups), mode="single")
        ahead = lookahead(model, self.lookahead_input)
        if ahead > self.max_lookahead + 1e-9:
            return f"look-ahead {ahead:.4g} > budget {self.max_lookahead:g}"
        return self.then(structure) if self.then is not None else None
