"""Architecture rules: checkpoints never name arbitrary callables; the package import graph stays layered."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference import build_from_node, load_acoustic, load_generator, register_model_class, resolve_target
from rfspeech.models.hifigan import HiFiGANGenerator

PKG = Path(__file__).resolve().parents[1] / "rfspeech"

TINY = dict(in_channels=80, upsample_initial_channel=16, upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
            resblock="1", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])


def _checkpoint(tmp_path: Path, node: dict, key: str = "generator") -> Path:
    path = tmp_path / "evil.pt"
    state = {key: {"w": torch.zeros(1)}, "config": {"model": {key: node}},
             "feature_params": FeatureParams().to_dict()}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("target, args", [
    ("builtins.open", {"file": "PWNED", "mode": "w"}),
    ("shutil.copyfile", {"src": __file__, "dst": "PWNED"}),
    ("numpy.save", {"file": "PWNED", "arr": [1]}),
    ("rfspeech.models.hifigan.torch.save", {"obj": 1, "f": "PWNED"}),
    ("rfspeech.io.atomic_write_text", {"path": "PWNED", "text": "x"}),
])
@pytest.mark.parametrize("loader, key", [(load_generator, "generator"), (load_acoustic, "acoustic")])
def test_checkpoint_naming_a_foreign_target_is_refused_and_writes_nothing(tmp_path, monkeypatch, target, args,
                                                                          loader, key):
    monkeypatch.chdir(tmp_path)
    path = _checkpoint(tmp_path, {"_target_": target, **args}, key)
    with pytest.raises(ConfigError) as e:
        loader(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and target in msg and "refused" in msg
    assert not (tmp_path / "PWNED").exists()


def test_nested_target_and_unknown_arguments_are_refused(tmp_path):
    where = "x.pt: config.model.generator"
    with pytest.raises(ConfigError, match="not plain values"):
        build_from_node({"_target_": "rfspeech.models.hifigan.HiFiGANGenerator",
                         "upsample_rates": {"_target_": "builtins.open", "file": "PWNED"}}, where)
    with pytest.raises(ConfigError, match=r"has no argument\(s\) \['bogus'\]"):
        build_from_node({"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", **TINY, "bogus": 1}, where)
    assert isinstance(build_from_node({"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", **TINY}, where),
                      HiFiGANGenerator)


def test_registered_class_outside_the_prefix_is_allowed():
    class Foreign(torch.nn.Module):
        def __init__(self, n: int = 1) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(n, n)

    with pytest.raises(ConfigError, match="refused"):
        resolve_target(f"{Foreign.__module__}.{Foreign.__qualname__}", "f.pt")
    register_model_class(Foreign)
    assert resolve_target(f"{Foreign.__module__}.{Foreign.__qualname__}", "f.pt") is Foreign


# --------------------------------------------------------------------------- import graph
def _imports(path: Path) -> set[str]:
    """Every ``rfspeech...`` module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "rfspeech" or m.startswith("rfspeech.")}


def _package_of(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:2])


MODULES = sorted(PKG.rglob("*.py"))


def test_no_library_module_imports_the_console_scripts():
    bad = [(str(p.relative_to(PKG.parent)), m) for p in MODULES if _package_of(p) != "rfspeech.bin"
           for m in _imports(p) if m.startswith("rfspeech.bin")]
    assert not bad, bad


@pytest.mark.parametrize("src, dst", [("rfspeech.train", "rfspeech.evaluate"), ("rfspeech.evaluate", "rfspeech.train"),
                                      ("rfspeech.inference", "rfspeech.evaluate"),
                                      ("rfspeech.inference", "rfspeech.train")])
def test_layering(src, dst):
    bad = [(str(p.relative_to(PKG.parent)), m) for p in MODULES if _package_of(p) == src
           for m in _imports(p) if m == dst or m.startswith(dst + ".")]
    assert not bad, bad


def test_console_scripts_do_not_import_each_other():
    bad = [(p.name, m) for p in (PKG / "bin").glob("*.py")
           for m in _imports(p) if m.startswith("rfspeech.bin") and not m.startswith("rfspeech.bin._cli")]
    assert not bad, bad


#: The layers, bottom first. A package imports only packages of its own layer or below; within a layer the
#: packages are siblings that never import each other (train and evaluate), except the foundation modules.
LAYERS: list[set[str]] = [
    {"rfspeech", "rfspeech.__init__", "rfspeech.errors", "rfspeech.io", "rfspeech.spectral", "rfspeech.strict_yaml",
     "rfspeech.config", "rfspeech.integrity", "rfspeech.checks"},
    {"rfspeech.layers"},
    {"rfspeech.rf", "rfspeech.data"},
    {"rfspeech.models"},
    {"rfspeech.search"},
    {"rfspeech.inference"},
    {"rfspeech.runconfig"},
    {"rfspeech.train", "rfspeech.evaluate"},
    {"rfspeech.runs"},
    {"rfspeech.bin"},
]
LIBRARIES = ("rfspeech.rf", "rfspeech.layers", "rfspeech.models", "rfspeech.data", "rfspeech.search", "rfspeech.train",
             "rfspeech.inference", "rfspeech.evaluate")


def _layer(module: str) -> int:
    package = ".".join(module.split(".")[:2])
    return next((i for i, members in enumerate(LAYERS) if package in members), 0)


def test_every_package_has_a_layer():
    packages = {_package_of(p) for p in MODULES}
    placed = set().union(*LAYERS)
    assert packages <= placed, sorted(packages - placed)


def test_no_package_imports_a_package_above_it():
    bad = [(str(p.relative_to(PKG.parent)), m) for p in MODULES for m in _imports(p)
           if _layer(m) > _layer(_package_of(p))]
    assert not bad, bad


def test_no_library_imports_the_orchestration_layer_or_the_console_scripts():
    bad = [(str(p.relative_to(PKG.parent)), m) for p in MODULES if _package_of(p) in LIBRARIES
           for m in _imports(p) if m.startswith(("rfspeech.runs", "rfspeech.bin"))]
    assert not bad, bad


@pytest.mark.parametrize("src, dst", [("rfspeech.search", "rfspeech.train"), ("rfspeech.search", "rfspeech.inference"),
                                      ("rfspeech.search", "rfspeech.evaluate"), ("rfspeech.runs", "rfspeech.bin")])
def test_search_is_below_training_and_runs_below_the_scripts(src, dst):
    bad = [(str(p.relative_to(PKG.parent)), m) for p in MODULES if _package_of(p) == src
           for m in _imports(p) if m == dst or m.startswith(dst + ".")]
    assert not bad, bad


# --------------------------------------------------------------------------- one import path per name
REPO = PKG.parent
_DEFINED: dict[str, set[str]] = {}


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _defined(module: str) -> set[str]:
    """Names a module defines at top level (functions, classes, assignments), not the ones it imports."""
    if module not in _DEFINED:
        names: set[str] = set()

        def walk(body: list[ast.stmt]) -> None:
            for s in body:
                if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(s.name)
                elif isinstance(s, ast.Assign):
                    names.update(n.id for t in s.targets for n in ast.walk(t) if isinstance(n, ast.Name))
                elif isinstance(s, ast.AnnAssign | ast.AugAssign) and isinstance(s.target, ast.Name):
                    names.add(s.target.id)
                elif isinstance(s, ast.If | ast.Try):
                    walk(s.body)
                    walk(s.orelse)
                    for h in getattr(s, "handlers", []):
                        walk(h.body)

        file = _module_file(module)
        if file is not None:
            walk(ast.parse(file.read_text(encoding="utf-8")).body)
        _DEFINED[module] = names
    return _DEFINED[module]


def _home(module: str, name: str) -> bool:
    """Whether ``module`` is a place to import ``name`` from: its defining module, a submodule, or the face
    (``__init__``) of the package it is defined in."""
    if _module_file(f"{module}.{name}") is not None or name in _defined(module):
        return True
    file = _module_file(module)
    if file is None or file.name != "__init__.py":
        return False
    inner = (".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
             for p in file.parent.rglob("*.py"))
    return any(name in _defined(m) for m in inner)


def _wrong_paths(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rfspeech":
            for a in node.names:
                if _module_file(f"{node.module}.{a.name}") is not None:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif not _home(node.module, a.name):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("rfspeech.")})
    # A test that patches a name where a module uses it (monkeypatch.setattr(mod, "name", ...)) reads it there too.
    patched = {(n.args[0].id, n.args[1].value) for n in ast.walk(tree) if isinstance(n, ast.Call) and len(n.args) >= 2
               and isinstance(n.args[0], ast.Name) and isinstance(n.args[1], ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and (node.value.id, node.attr) not in patched and not _home(aliases[node.value.id], node.attr)):
            bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_one_import_path_per_name():
    """Every name is imported from the module that defines it (or its package's face): no re-exports."""
    files = [p for d in ("rfspeech", "tests", "bench") for p in sorted((REPO / d).rglob("*.py"))]
    bad = [line for p in files for line in _wrong_paths(p)]
    assert not bad, bad


def test_no_module_only_hands_names_on():
    """A module that defines nothing and only imports (a compatibility re-export) is not left behind."""
    bad = []
    for p in MODULES:
        if p.name == "__init__.py":
            continue
        body = [s for s in ast.parse(p.read_text(encoding="utf-8")).body
                if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        own = [s for s in body if not isinstance(s, ast.Import | ast.ImportFrom)
               and not (isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in s.targets))]
        if body and not own:
            bad.append(str(p.relative_to(REPO)))
    assert not bad, bad


# --------------------------------------------------------------------------- small signatures
MAX_PARAMETERS = 10


def _parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    n = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return n - 1 if names and names[0].arg in ("self", "cls") else n


def test_no_function_or_constructor_outside_models_takes_more_than_ten_parameters():
    """Settings travel as typed objects; only the models' constructors (their arguments are the model YAML's keys)
    may be long."""
    bad = [f"{p.relative_to(REPO)}:{node.lineno} {node.name} ({_parameter_count(node)})"
           for p in MODULES if _package_of(p) != "rfspeech.models"
           for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
           if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _parameter_count(node) > MAX_PARAMETERS]
    assert not bad, bad
