"""Capture a model's time-axis structure as a small program of receptive-field steps.

The model runs once on an example input, through a ``torch.fx`` trace (rule modules are leaves)
or, for code fx cannot trace, eagerly under module hooks plus a ``TorchFunctionMode`` that sees
every tensor operation between modules. Either way each operation whose inputs depend on a
model input becomes one :class:`Op` of a program: its input ops, the :class:`Step` it applies to
the time axis (``None``: point-wise), and, for layers, a :class:`LayerMeta`. Evaluating the
program with exact fractions gives every field; the refinement hints re-evaluate it with
changed dilations or upsampling orders without running the model again.

The time axis is tracked through the graph (last axis of every input; followed through
transposes, reshapes, reductions and indexing), so channel-last code and 2D convolutions over
``(B, 1, F, T)`` are analysed correctly; an operation that mixes the whole time axis (a
reduction over time, a dense layer over time, a reshape that folds time) is an error, never a
silent wrong number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from rfspeech.rf.rules import (
    Field,
    RFRuleError,
    Step,
    builtin_module_kind,
    conv_step,
    merge_fields,
    register_rule,
    shift_step,
    transposed_step,
    upsample_step,
    user_function_rule,
    user_module_rule,
)

# ------------------------------------------------------------------------------------------ op tables

_POINTWISE = frozenset("""
relu relu6 leaky_relu elu selu celu gelu silu mish softplus softsign tanh sigmoid hardtanh hardsigmoid
hardswish logsigmoid tanhshrink softshrink hardshrink threshold prelu rrelu exp expm1 log log1p log2 log10
sqrt rsqrt abs absolute neg negative pos sin cos tan sinh cosh atan asin acos erf erfc sign sgn square reciprocal
floor ceil round trunc frac clamp clamp_min clamp_max clip nan_to_num float double half bfloat16 to type
type_as contiguous clone detach dropout alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d
add sub subtract rsub mul multiply truediv div divide floordiv floor_divide remainder mod fmod pow
float_power maximum minimum fmax fmin where masked_fill lerp addcmul addcdiv hypot atan2 copysign
logaddexp xlogy eq ne lt le gt ge logical_and logical_or logical_not logical_xor and_ or_ xor invert
cpu cuda requires_grad batch_norm sinc sigmoid_ square_ isnan isinf isfinite real imag angle conj
""".split())
_CONSTANT = frozenset("""
new_empty new_zeros new_ones new_full new_tensor zeros_like ones_like empty_like full_like zero_ fill_
""".split())
_RANDOM = frozenset("""
normal_ uniform_ randn_like rand_like randint_like bernoulli_ exponential_ random_ geometric_ cauchy_
log_normal_ randn rand randint randperm
""".split())
_RESHAPE = frozenset("view reshape view_as reshape_as flatten unflatten squeeze unsqueeze expand expand_as "
                     "broadcast_to atleast_3d".split())
_REDUCE = frozenset("sum mean amax amin max min norm var std prod logsumexp all any argmax argmin median "
                    "nansum nanmean count_nonzero".split())
_DIMWISE = {"softmax": None, "log_softmax": None, "softmin": None, "glu": -1, "normalize": 1}
_CAT = frozenset("cat concat concatenate stack".split())
_SPLIT = frozenset("chunk split tensor_split unbind split_with_sizes".split())
_NONTENSOR_OUT = frozenset("size dim numel getattr".split())
_DUNDER_REVERSED = frozenset("add sub mul truediv floordiv pow matmul mod and or xor".split())


def op_name(target: Any) -> str:
    """Normalise an fx target / torch function to a plain operation name (``__radd__`` → ``add``)."""
    if isinstance(target, str):
        name = target
    else:
        name = getattr(target, "__name__", None) or type(target).__name__
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("r") and name[1:] in _DUNDER_REVERSED:
            name = name[1:]
        elif name.startswith("i") and name[1:] in _DUNDER_REVERSED:
            name = name[1:]
        if name in ("and", "or"):
            name += "_"
    return name


def _base_inplace(name: str) -> str:
    """``add_`` → ``add`` for in-place variants of point-wise ops."""
    if name.endswith("_") and not name.endswith("__") and name[:-1] in _POINTWISE:
        return name[:-1]
    return name


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested structure of tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


def module_type_name(module: nn.Module) -> str:
    """Class name, without the ``Parametrized`` prefix weight norm adds."""
    cls = type(module)
    if parametrize.is_parametrized(module) and cls.__name__.startswith("Parametrized") and len(cls.__mro__) > 1:
        cls = cls.__mro__[1]
    return cls.__name__


# ------------------------------------------------------------------------------------------ the program


@dataclass(frozen=True)
class LayerMeta:
    """A layer of the table: a module (or a convolution/interpolation function) with a step."""

    name: str
    type: str
    kernel_size: int
    stride: int
    dilation: int
    up: int


@dataclass
class Op:
    """One operation of the captured program."""

    inputs: tuple[int, ...]
    step: Step | None
    what: str
    source: str | None = None
    layer: LayerMeta | None = None
    error: str | None = None


def evaluate(ops: list[Op], overrides: dict[int, Step] | None = None, sources: tuple[str, ...] | None = None,
             poisoned: dict[int, str] | None = None, *, identity: Callable[[], Any] = Field.identity,
             merge: Callable[[list[Any], str], Any] = merge_fields, apply: Callable[[Step, Any], Any] | None = None,
             ) -> tuple[list[dict[str, Field]], dict[int, dict[str, Field]]]:
    """Fields of every op (per model input), and the merged input fields of every layer op.

    An op the walker could not analyse (``Op.error``) poisons everything computed from it; its
    error is raised only where it reaches what the caller asks for (``poisoned`` collects them),
    so a reduction feeding only Python control flow is harmless.

    Args:
        ops: the program.
        overrides: replacement steps by op index (what-if analysis for the hints).
        sources: restrict to these model inputs (faster what-if analysis).
        poisoned: filled with ``{op index: error message}`` of every op that depends on an error.
        identity, merge, apply: the field algebra (default :class:`Field` and ``step.apply(field)``),
            e.g. the per-phase fields of :mod:`rfspeech.rf.lookahead`.

    Raises:
        RFRuleError: operands at different rates meet in a sum or concatenation.
    """
    values: list[dict[str, Field]] = []
    layer_inputs: dict[int, dict[str, Field]] = {}
    errors: dict[int, str] = {} if poisoned is None else poisoned
    for i, op in enumerate(ops):
        if op.source is not None:
            values.append({op.source: identity()} if sources is None or op.source in sources else {})
            continue
        # The earliest error wins: it is the cause of everything computed from it.
        bad = next((errors[k] for k in op.inputs if k in errors), None) or op.error
        if bad is not None:
            errors[i] = bad
            values.append({})
            continue
        ins = [values[k] for k in op.inputs]
        merged: dict[str, Field] = {}
        for d in ins:
            for name in d:
                if name not in merged:
                    merged[name] = merge([e[name] for e in ins if name in e], op.what)
        if op.layer is not None:
            layer_inputs[i] = merged
        step = op.step if overrides is None else overrides.get(i, op.step)
        if step is not None:
            try:
                merged = {name: step.apply(f) if apply is None else apply(step, f) for name, f in merged.items()}
            except ValueError as e:
                raise RFRuleError(f"{op.what}: {e}") from None
        values.append(merged)
    return values, layer_inputs


# ------------------------------------------------------------------------------------------ the walker


class Walker:
    """Builds the program from the operations of one forward pass (fx or hooks)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._node: dict[int, int] = {}
        self._axis: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []  # keeps ids unique while the walk runs
        self._calls: Counter[str] = Counter()
        self.random_sources: list[int] = []

    # -- bookkeeping
    def node_of(self, t: torch.Tensor) -> int | None:
        return self._node.get(id(t))

    def _register(self, out: Any, idx: int, axis: int) -> None:
        for t in iter_tensors(out):
            self._node[id(t)] = idx
            self._axis[id(t)] = axis
            self._keep.append(t)

    def _unregister(self, out: Any) -> None:
        for t in iter_tensors(out):
            self._node.pop(id(t), None)
            self._keep.append(t)

    def _layer_name(self, name: str) -> str:
        self._calls[name] += 1
        n = self._calls[name]
        return name if n == 1 else f"{name}#{n}"

    def add_input(self, name: str, tensor: torch.Tensor) -> None:
        """A model input: a source with field ``1`` and the time axis last."""
        idx = len(self.ops)
        self.ops.append(Op((), None, f"input {name}", source=name))
        self._register(tensor, idx, -1)

    def output_node(self, out: Any, index: int = 0) -> tuple[int, torch.Tensor]:
        """Op index of the ``index``-th tensor of the model output."""
        tensors = list(iter_tensors(out))
        if not tensors:
            raise RFRuleError("the model output holds no tensor")
        if index >= len(tensors):
            raise RFRuleError(f"output index {index} out of range: the model returns {len(tensors)} tensors")
        t = tensors[index]
        idx = self.node_of(t)
        if idx is None:
            raise RFRuleError("the model output does not depend on any model input")
        return idx, t

    # -- operations
    def _sources_and_axis(self, args: Any, kwargs: Any, what: str) -> tuple[list[torch.Tensor], int]:
        srcs = [t for t in iter_tensors((args, kwargs)) if id(t) in self._node]
        if not srcs:
            return srcs, -1
        axes = {self._axis[id(t)] for t in srcs}
        if len(axes) > 1:
            raise RFRuleError(f"{what}: its inputs carry the time axis at different positions {sorted(axes)}")
        ax = axes.pop()
        lengths = {t.shape[ax] for t in srcs if t.dim() >= -ax}
        if len(lengths) > 1:
            raise RFRuleError(f"{what}: combines inputs of different lengths {sorted(lengths)} along time")
        return srcs, ax

    def _emit(self, srcs: list[torch.Tensor], step: Step | None, what: str, out: Any, axis: int,
              layer: LayerMeta | None = None) -> None:
        ins = tuple(dict.fromkeys(self._node[id(t)] for t in srcs))
        idx = len(self.ops)
        self.ops.append(Op(ins, step, what, layer=layer))
        self._register(out, idx, axis)

    def call_module(self, module: nn.Module, path: str, args: tuple, kwargs: dict, out: Any) -> None:
        """A leaf module was called."""
        try:
            self._call_module(module, path, args, kwargs, out)
        except ValueError as e:  # a step that cannot exist (e.g. output phases without input)
            self._error(args, kwargs, out, f"module '{path or '<root>'}' ({module_type_name(module)}): {e}")
        except RFRuleError as e:
            self._error(args, kwargs, out, str(e))

    def _error(self, args: Any, kwargs: Any, out: Any, message: str) -> None:
        """Record an op that cannot be analysed; it is an error only if the output depends on it."""
        srcs = [t for t in iter_tensors((args, kwargs)) if id(t) in self._node]
        if not srcs:
            raise RFRuleError(message)
        ins = tuple(dict.fromkeys(self._node[id(t)] for t in srcs))
        idx = len(self.ops)
        self.ops.append(Op(ins, None, message, error=message))
        self._register(out, idx, -1)

    def _call_module(self, module: nn.Module, path: str, args: tuple, kwargs: dict, out: Any) -> None:
        tname = module_type_name(module)
        what = f"module '{path or '<root>'}' ({tname})"
        if not list(iter_tensors(out)):
            return
        srcs, ax = self._sources_and_axis(args, kwargs, what)
        if not srcs:
            self._unregister(out)
            return
        x = srcs[0]
        user = user_module_rule(module)
        if user is not None:
            step = user(module)
            if isinstance(step, Step) or not step:
                step = step if isinstance(step, Step) else None
                layer = None if step is None else self._meta(path, tname, step)
                self._emit(srcs, step, what, out, ax, layer)
                return
            steps = list(step)  # a composite layer: its steps in order, each a row of the table
            ins = tuple(dict.fromkeys(self._node[id(t)] for t in srcs))
            for k, part in enumerate(steps):
                self.ops.append(Op(ins, part, f"{what} step {k + 1}/{len(steps)}",
                                   layer=self._meta(path, tname, part)))
                ins = (len(self.ops) - 1,)
            self._register(out, ins[0], ax)
            return
        kind = builtin_module_kind(module)
        if kind is None:
            raise RFRuleError(
                f"no receptive-field rule for {what}; register one with "
                f"rfspeech.rf.register_rule({tname}, fn) where fn(module) returns a Step (or None if point-wise)"
            )
        step: Step | None = None
        out_t = next(iter_tensors(out))
        if kind == "dilated":
            self._need_last_axis(x, ax, what)
            left, _ = module.pad_amounts()
            step = conv_step(module.kernel_size[0], 1, module.dilation[0], padding=left)
        elif kind in ("conv", "transposed", "pool"):
            step = self._window_step(module, kind, x, ax, what)
        elif kind == "upsample":
            step = self._interp_step(x, out_t, ax, module.mode, module.align_corners, what)
        elif kind == "pad":
            step = self._pad_step(x, ax, list(module.padding), what)
        elif kind == "linear":
            if ax % x.dim() == x.dim() - 1:
                raise RFRuleError(f"{what} is dense over the time axis (time is its last dimension)")
        elif kind == "layernorm":
            n = len(module.normalized_shape)
            if ax % x.dim() >= x.dim() - n:
                raise RFRuleError(f"{what} normalises over the time axis")
        elif kind == "dimwise":
            self._check_dim(x, ax, getattr(module, "dim", None), what)
        elif kind == "reshape":
            ax = self._infer_axis(x, ax, out_t, what)
        layer = None
        if step is not None and kind not in ("pad",):
            layer = self._meta(path, tname, step)
        self._emit(srcs, step, what, out, ax, layer)

    def _meta(self, path: str, tname: str, step: Step) -> LayerMeta:
        return LayerMeta(self._layer_name(path or "<root>"), tname, step.kernel_size, step.stride,
                         step.dilation, step.up)

    @staticmethod
    def _need_last_axis(x: torch.Tensor, ax: int, what: str) -> None:
        if ax != -1:
            raise RFRuleError(f"{what} convolves the last axis, but time is axis {ax} of shape {tuple(x.shape)}")

    @staticmethod
    def _pick(value: Any, i: int) -> Any:
        if isinstance(value, (tuple, list)):
            return value[i] if len(value) > 1 else value[0]
        return value

    def _window_step(self, module: nn.Module, kind: str, x: torch.Tensor, ax: int, what: str) -> Step:
        ks = module.kernel_size
        n = len(ks) if isinstance(ks, (tuple, list)) else (x.dim() - 2 if x.dim() > 2 else 1)
        if ax < -n:
            raise RFRuleError(f"{what} slides over its last {n} axes, but time is axis {ax} of shape "
                              f"{tuple(x.shape)} (it would be mixed as channels)")
        i = n + ax
        k = int(self._pick(ks, i))
        stride = module.stride if module.stride is not None else ks
        s = int(self._pick(stride, i))
        d = int(self._pick(getattr(module, "dilation", 1), i))
        pad = module.padding
        if isinstance(pad, str):
            p = ((k - 1) * d) // 2 if pad == "same" else 0
        else:
            p = int(self._pick(pad, i))
        if kind == "transposed":
            return transposed_step(k, s, d, p)
        return conv_step(k, s, d, p)

    def _interp_step(self, x: torch.Tensor, out: torch.Tensor, ax: int, mode: str, align_corners: Any,
                     what: str) -> Step | None:
        lin, lout = x.shape[ax], out.shape[ax]
        ratio = Fraction(lout, lin)
        if ratio == 1:
            return None
        if mode in ("linear", "bilinear", "trilinear", "bicubic") and align_corners:
            raise RFRuleError(f"{what}: interpolation with align_corners=True has no constant rate")
        if ratio.denominator == 1:
            if mode in ("nearest", "nearest-exact"):
                return upsample_step(ratio.numerator, "nearest")
            if mode in ("linear", "bilinear", "trilinear"):
                return upsample_step(ratio.numerator, "linear")
        elif ratio.numerator == 1 and mode in ("nearest",):
            return conv_step(1, stride=ratio.denominator)
        raise RFRuleError(f"{what}: cannot analyse {mode!r} resampling of time by {lin} -> {lout}")

    @staticmethod
    def _pad_step(x: torch.Tensor, ax: int, pad: list[int], what: str) -> Step | None:
        # F.pad lists (left, right) pairs starting from the last axis.
        pair = -ax - 1
        if len(pad) < 2 * (pair + 1):
            return None
        left = int(pad[2 * pair])
        return shift_step(left) if left else None

    @staticmethod
    def _check_dim(x: torch.Tensor, ax: int, dim: Any, what: str) -> None:
        if dim is None:
            raise RFRuleError(f"{what}: acts over all axes, including time")
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if any(int(d) % x.dim() == ax % x.dim() for d in dims):
            raise RFRuleError(f"{what}: acts over the whole time axis")

    @staticmethod
    def _infer_axis(x: torch.Tensor, ax: int, out: torch.Tensor, what: str) -> int:
        """Where the time axis of ``x`` went in ``out`` after a reshape-like op."""
        a = ax % x.dim()
        before = math.prod(x.shape[:a])
        length = x.shape[a]
        prod = 1
        for b, size in enumerate(out.shape):
            if prod == before and size == length:
                return b - out.dim()
            prod *= size
        raise RFRuleError(
            f"{what}: reshapes the time axis ({tuple(x.shape)} -> {tuple(out.shape)}, time axis {ax}); "
            "the receptive field of folded time is not defined"
        )

    def call_function(self, target: Any, args: tuple, kwargs: dict, out: Any, where: str,
                      where_type: str = "") -> None:
        """A function or tensor method was called outside every leaf module.

        Args:
            target: the function, or the method name.
            args: actual arguments.
            kwargs: actual keyword arguments.
            out: the result.
            where: path of the innermost module whose ``forward`` made the call.
            where_type: that module's class name (for error messages).
        """
        self._where_type = where_type
        try:
            self._call_function(target, args, kwargs, out, where)
        except ValueError as e:
            self._error(args, kwargs, out, f"{op_name(target)}() in '{where or '<root>'}': {e}")
        except RFRuleError as e:
            self._error(args, kwargs, out, str(e))

    def _call_function(self, target: Any, args: tuple, kwargs: dict, out: Any, where: str) -> None:
        name = op_name(target)
        kwargs = kwargs or {}
        what = f"{name}() in '{where or '<root>'}'"
        outs = list(iter_tensors(out))
        if name == "setitem" and args and isinstance(args[0], torch.Tensor):
            srcs, ax = self._sources_and_axis(args, kwargs, what)
            if srcs:
                self._emit(srcs, None, what, args[0], ax)
            return
        if not outs or name in _NONTENSOR_OUT:
            return
        if name == "getitem" and isinstance(args[0], (tuple, list)):
            return  # an element of a tuple output: registered with its producer
        if name in _CONSTANT:
            self._unregister(out)
            return
        srcs, ax = self._sources_and_axis(args, kwargs, what)
        if name in _RANDOM or (name in ("normal", "bernoulli", "poisson") and not srcs):
            idx = len(self.ops)
            self.ops.append(Op((), None, what, source=f"<random:{idx}>"))
            self.random_sources.append(idx)
            self._register(out, idx, -1)
            return
        if not srcs:
            self._unregister(out)
            return
        if name == "copy_":
            src_t = args[1] if len(args) > 1 else kwargs.get("src")
            if isinstance(src_t, torch.Tensor) and id(src_t) in self._node:
                self._emit([src_t], None, what, out, self._axis[id(src_t)])
            else:
                self._unregister(out)
            return
        x = srcs[0]
        out_t = outs[0]
        user = user_function_rule(target, name)
        if user is not None:
            step = user(*args, **kwargs)
            layer = None
            if step is not None:
                layer = self._meta(f"{where}:{name}" if where else name, name, step)
            self._emit(srcs, step, what, out, ax, layer)
            return
        step, new_ax, is_layer = self._function_step(name, args, kwargs, x, ax, out_t, what)
        layer = None
        if is_layer and step is not None:
            layer = self._meta(f"{where}:{name}" if where else name, name, step)
        self._emit(srcs, step, what, out, new_ax, layer)

    def _arg(self, args: tuple, kwargs: dict, i: int, key: str, default: Any = None) -> Any:
        if len(args) > i:
            return args[i]
        return kwargs.get(key, default)

    def _function_step(self, name: str, args: tuple, kwargs: dict, x: torch.Tensor, ax: int,
                       out: torch.Tensor, what: str) -> tuple[Step | None, int, bool]:
        base = _base_inplace(name)
        nd = x.dim()
        if base in _POINTWISE:
            return None, ax, False
        if base in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
            return None, ax, False
        if base in _RESHAPE:
            if out.shape[ax] != x.shape[ax] and x.shape[ax] == 1 and base in ("expand", "expand_as", "broadcast_to"):
                raise RFRuleError(f"{what}: broadcasts a length-1 time axis")
            return None, self._infer_axis(x, ax, out, what), False
        if base in ("transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "permute", "t"):
            a = ax % nd
            if base == "t":
                perm = list(range(nd))[::-1]
            elif base == "permute":
                p = args[1:] if len(args) > 1 else kwargs.get("dims")
                if len(p) == 1 and isinstance(p[0], (tuple, list)):
                    p = p[0]
                perm = [int(d) % nd for d in p]
            elif base in ("movedim", "moveaxis"):
                src = int(self._arg(args, kwargs, 1, "source")) % nd
                dst = int(self._arg(args, kwargs, 2, "destination")) % nd
                order = [d for d in range(nd) if d != src]
                order.insert(dst, src)
                perm = order
            else:
                d0 = int(self._arg(args, kwargs, 1, "dim0")) % nd
                d1 = int(self._arg(args, kwargs, 2, "dim1")) % nd
                perm = list(range(nd))
                perm[d0], perm[d1] = perm[d1], perm[d0]
            return None, perm.index(a) - out.dim(), False
        if base in _REDUCE:
            dim = self._arg(args, kwargs, 1, "dim")
            if dim is None or isinstance(dim, torch.Tensor):
                raise RFRuleError(f"{what}: reduces over every axis, including time")
            dims = [int(d) % nd for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
            a = ax % nd
            if a in dims:
                raise RFRuleError(f"{what}: reduces over the time axis")
            keep = bool(self._arg(args, kwargs, 2, "keepdim", False))
            new_a = a if keep else a - sum(d < a for d in dims)
            return None, new_a - out.dim(), False
        if base in _DIMWISE:
            dim = self._arg(args, kwargs, 1, "dim", _DIMWISE[base])
            self._check_dim(x, ax, dim, what)
            return None, ax, False
        if base in _CAT:
            dim = int(self._arg(args, kwargs, 1, "dim", 0))
            if base == "stack":
                d = dim % (nd + 1)
                a = ax % nd
                new_a = a + 1 if d <= a else a
                return None, new_a - out.dim(), False
            if dim % nd == ax % nd:
                raise RFRuleError(f"{what}: concatenates along the time axis")
            return None, ax, False
        if base in _SPLIT:
            dim = int(self._arg(args, kwargs, 2, "dim", 0)) if base != "unbind" else int(
                self._arg(args, kwargs, 1, "dim", 0))
            if dim % nd == ax % nd:
                raise RFRuleError(f"{what}: splits the time axis")
            if base == "unbind":
                a = ax % nd
                return None, (a - (1 if dim % nd < a else 0)) - out.dim(), False
            return None, ax, False
        if base == "getitem":
            return self._index_step(x, ax, args[1], out, what)
        if base == "narrow":
            dim = int(self._arg(args, kwargs, 1, "dim")) % nd
            start = int(self._arg(args, kwargs, 2, "start"))
            if dim == ax % nd:
                return (shift_step(-start) if start else None), ax, False
            return None, ax, False
        if base == "pad":
            pad = list(self._arg(args, kwargs, 1, "pad"))
            return self._pad_step(x, ax, pad, what), ax, False
        if base in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"):
            default_mode = {"upsample_nearest": "nearest", "upsample_bilinear": "bilinear"}.get(base, "nearest")
            mode = self._arg(args, kwargs, 3, "mode", default_mode)
            align = self._arg(args, kwargs, 4, "align_corners", None)
            return self._interp_step(x, out, ax, mode, align, what), ax, True
        if base == "repeat_interleave":
            reps = self._arg(args, kwargs, 1, "repeats")
            dim = self._arg(args, kwargs, 2, "dim")
            if dim is None or isinstance(reps, torch.Tensor):
                raise RFRuleError(f"{what}: repeat_interleave needs an integer repeat and a dim")
            if int(dim) % nd == ax % nd:
                return (upsample_step(int(reps)) if int(reps) > 1 else None), ax, True
            return None, ax, False
        if base in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
            return self._functional_conv(base, args, kwargs, x, ax, what), ax, True
        if base in ("avg_pool1d", "max_pool1d", "avg_pool2d", "max_pool2d", "lp_pool1d"):
            n = int(base[-2])
            if ax < -n:
                raise RFRuleError(f"{what}: pools the last {n} axes, time is axis {ax}")
            i = n + ax
            k = int(self._pick(self._arg(args, kwargs, 1, "kernel_size"), i))
            s = self._arg(args, kwargs, 2, "stride")
            s = k if s is None or s == [] or s == () else int(self._pick(s, i))
            p = int(self._pick(self._arg(args, kwargs, 3, "padding", 0), i))
            d = int(self._pick(self._arg(args, kwargs, 4, "dilation", 1), i)) if "max" in base else 1
            return conv_step(k, s, d, p), ax, True
        if base == "linear":
            if ax % nd == nd - 1:
                raise RFRuleError(f"{what}: dense over the time axis (time is the last dimension)")
            return None, ax, False
        if base == "layer_norm":
            shape = self._arg(args, kwargs, 1, "normalized_shape")
            if ax % nd >= nd - len(shape):
                raise RFRuleError(f"{what}: normalises over the time axis")
            return None, ax, False
        if base == "embedding":
            return None, ax - 1, False
        owner = getattr(self, "_where_type", "")
        alt = (f", or for the whole module with rfspeech.rf.register_rule({owner}, fn) where fn(module) returns a "
               "Step") if owner else ""
        raise RFRuleError(
            f"no receptive-field rule for {what}{f' (module class {owner})' if owner else ''}; register one with "
            f"rfspeech.rf.register_rule({name!r}, fn) where fn(*args, **kwargs) returns a Step (or None if "
            f"point-wise along time){alt}"
        )

    def _functional_conv(self, base: str, args: tuple, kwargs: dict, x: torch.Tensor, ax: int, what: str) -> Step:
        weight = self._arg(args, kwargs, 1, "weight")
        n = int(base[-2])
        if ax < -n:
            raise RFRuleError(f"{what}: convolves the last {n} axes, time is axis {ax}")
        i = n + ax
        k = int(weight.shape[2 + i])
        if base.startswith("conv_transpose"):
            # (input, weight, bias, stride, padding, output_padding, groups, dilation)
            s = int(self._pick(self._arg(args, kwargs, 3, "stride", 1), i))
            p = int(self._pick(self._arg(args, kwargs, 4, "padding", 0), i))
            d = int(self._pick(self._arg(args, kwargs, 7, "dilation", 1), i))
            return transposed_step(k, s, d, p)
        # (input, weight, bias, stride, padding, dilation, groups)
        s = int(self._pick(self._arg(args, kwargs, 3, "stride", 1), i))
        d = int(self._pick(self._arg(args, kwargs, 5, "dilation", 1), i))
        pad = self._arg(args, kwargs, 4, "padding", 0)
        if isinstance(pad, str):
            p = ((k - 1) * d) // 2 if pad == "same" else 0
        else:
            p = int(self._pick(pad, i))
        return conv_step(k, s, d, p)

    def _index_step(self, x: torch.Tensor, ax: int, index: Any, out: torch.Tensor,
                    what: str) -> tuple[Step | None, int, bool]:
        idx = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) or isinstance(i, (list,)) for i in idx):
            # Advanced indexing: allowed only when the time axis keeps its length and place.
            return None, self._infer_axis(x, ax, out, what), False
        n_consume = sum(1 for i in idx if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in idx:
            if i is Ellipsis:
                expanded.extend([slice(None)] * (x.dim() - n_consume))
            else:
                expanded.append(i)
        while sum(1 for i in expanded if i is not None) < x.dim():
            expanded.append(slice(None))
        a = ax % x.dim()
        in_dim = 0
        out_dim = 0
        step: Step | None = None
        new_pos = None
        for i in expanded:
            if i is None:
                out_dim += 1
                continue
            if in_dim == a:
                if not isinstance(i, slice):
                    raise RFRuleError(f"{what}: selects a single time step")
                start, _, stride = i.indices(x.shape[a])
                if stride < 1:
                    raise RFRuleError(f"{what}: reverses the time axis")
                if start or stride > 1:
                    step = shift_step(-start, stride)
                new_pos = out_dim
            if isinstance(i, slice):
                out_dim += 1
            in_dim += 1
        assert new_pos is not None
        return step, new_pos - out.dim(), False


def is_leaf(module: nn.Module) -> bool:
    """Modules the walker treats as a whole (rule modules and other ``torch.nn`` modules)."""
    if user_module_rule(module) is not None or builtin_module_kind(module) is not None:
        return True
    mod = type(module).__module__
    return mod.startswith("torch.nn") and not isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


# ------------------------------------------------------------------------------------------ fx capture


def capture_fx(model: nn.Module, walker: Walker, params: list[str], values: dict[str, Any]) -> Any:
    """Trace ``model`` with torch.fx and run the trace on ``values``, feeding the walker.

    Args:
        model: the model.
        walker: collects the program.
        params: names of ``forward``'s parameters, in order.
        values: example value of every parameter (tensors for inputs, defaults for the rest).

    Returns:
        The model output.

    Raises:
        torch.fx.proxy.TraceError (or any tracing exception): the model cannot be traced.
    """
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return is_leaf(m)

    concrete = {p: values[p] for p in params if not isinstance(values[p], torch.Tensor)}
    graph = _Tracer().trace(model, concrete_args=concrete or None)
    gm = fx.GraphModule(model, graph)

    class _Runner(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            if n.op == "placeholder":
                return super().run_node(n)
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            out = super().run_node(n)
            if n.op == "call_module":
                walker.call_module(self.fetch_attr(n.target), str(n.target), args, kwargs, out)
            elif n.op in ("call_function", "call_method"):
                stack = n.meta.get("nn_module_stack") or {}
                where, where_type = "", ""
                if stack:
                    key = list(stack.keys())[-1]
                    entry = stack[key]
                    if isinstance(entry, tuple) and len(entry) == 2:
                        where = str(entry[0])
                        cls = entry[1]
                        where_type = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
                    else:
                        where = str(key)
                walker.call_function(n.target, args, kwargs, out, where, where_type)
            return out

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    run_args = []
    for p, _ in zip(params, placeholders):
        v = values[p]
        if isinstance(v, torch.Tensor):
            walker.add_input(p, v)
        run_args.append(v)
    return _Runner(gm, garbage_collect_values=False).run(*run_args)


# ------------------------------------------------------------------------------------------ hooks capture


def capture_hooks(model: nn.Module, walker: Walker, params: list[str], values: dict[str, Any]) -> Any:
    """Run ``model`` eagerly, seeing leaf modules through hooks and everything else through a
    ``TorchFunctionMode`` (the fallback for models torch.fx cannot trace)."""
    from torch.overrides import TorchFunctionMode

    state: dict[str, Any] = {"depth": 0, "busy": False, "path": [("", "")]}
    names = {m: n for n, m in model.named_modules()}

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if state["depth"] == 0 and not state["busy"]:
                state["busy"] = True
                try:
                    walker.call_function(func, args, kwargs, out, *state["path"][-1])
                finally:
                    state["busy"] = False
            return out

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if is_leaf(module):
            state["depth"] += 1
        elif state["depth"] == 0:
            state["path"].append((names.get(module, ""), type(module).__name__))

    def post(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if is_leaf(module):
            state["depth"] -= 1
            if state["depth"] == 0:
                state["busy"] = True
                try:
                    walker.call_module(module, names.get(module, ""), args, kwargs, out)
                finally:
                    state["busy"] = False
        elif state["depth"] == 0:
            state["path"].pop()

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
        pos = []
        for p in params:
            v = values[p]
            if isinstance(v, torch.Tensor):
                walker.add_input(p, v)
            pos.append(v)
        with _Mode():
            return model(*pos)
    finally:
        for h in handles:
            h.remove()


__all__ = ["LayerMeta", "Op", "Walker", "capture_fx", "capture_hooks", "evaluate", "is_leaf", "op_name"]


# ------------------------------------------------------------------------------------------ composite layers

def _antialias_rule(module: nn.Module) -> Step:
    """BigVGAN's up → point-wise activation → down block as one exact conv step (see ``field_taps``)."""
    if builtin_module_kind(module.act) != "pointwise" and not isinstance(module.act, Snake):
        raise RFRuleError(f"anti-aliased activation around {module_type_name(module.act)}: not point-wise")
    first, last = module.field_taps()
    return conv_step(last - first + 1, padding=-first)


def _sparse_tap_rule(module: nn.Module) -> Step:
    """A sparse-tap conv (an exported learned-spacing conv) as the conv spanning its first to last tap.

    Exact for the field's extent and look-ahead; the taps between may be sparse, the walker's
    fields are intervals.
    """
    first, last = module.field_taps()
    return conv_step(last - first + 1, padding=-first)


from rfspeech.layers.antialias import AntiAliasActivation1d, Snake  # noqa: E402 - after the rules it needs
from rfspeech.layers.sparse import SparseTapConv1d  # noqa: E402

register_rule(AntiAliasActivation1d, _antialias_rule)
register_rule(SparseTapConv1d, _sparse_tap_rule)
