"""Runs planned models inside one arena: binds kernels to arena views once, then each request is a loop of calls.

Several models share one Executor: their persistent regions add up, their activation regions
overlap (they run one at a time), so the arena is sum(persistent) + max(activations).
Everything that can fail — a corrupt file, an unsupported op, a budget that cannot fit — fails
here, at construction; kernels are compiled (or loaded from the numba cache) by a warm-up run
before the constructor returns, so `run()` never compiles.
"""

from __future__ import annotations

import json
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgert.errors import BudgetExceeded, PlanError, RequestError
from edgert.kernels.conv import fc_chain_layer, qfc_chain_layer
from edgert.kernels.matvec import bind_chain
from edgert.kernels.qdot import bind_qchain
from edgert.kernels.registry import KernelRegistry, OpContext, Step, default_registry
from edgert.kernels.shape import fuse_moves
from edgert.model.graph import Graph, Quantization, Subgraph
from edgert.model.reader import load_model
from edgert.runtime.shapes import with_input_shapes
from edgert.plan.plan import Aliasing, MemoryPlan, plan
from edgert.runtime.arena import Arena
from edgert.runtime.threads import set_threads


@dataclass(frozen=True)
class TensorSpec:
    """What a caller must send or will receive: name, shape, dtype, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quantization: Quantization | None = None

    def to_json(self) -> dict:
        q = self.quantization
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
                "quantization": None if q is None else {"scales": list(q.scales), "zero_points": list(q.zero_points),
                                                        "quantized_dimension": q.quantized_dimension}}


@dataclass
class _Model:
    name: str
    graph: Graph
    plan: MemoryPlan
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_views: list[np.ndarray]
    output_views: list[np.ndarray]
    steps: list[Step]
    init_steps: list[Step]
    persistent_offset: int = 0
    # What run() calls: `steps` expanded and resolved to compiled entry points (see _direct_steps).
    run_steps: list[Step] | None = None
    # (arena view, dtype, shape) per input, for run()'s check-and-copy loop.
    input_slots: tuple = ()


@dataclass
class _Variant:
    """A model resized by resize_inputs: its graph and plan, where its persistent data lives, its bound steps.

    A variant whose persistent layout equals the stored plan's (no packed weights) shares the
    model's persistent region; otherwise it owns `own_bytes` at `persistent_offset`. Variables
    always resolve to the model's storage, so state carries across shapes.
    """

    graph: Graph
    plan: MemoryPlan
    persistent_offset: int
    own_bytes: int
    bound: _Model | None = None


def _shares_persistent(base: MemoryPlan, p: MemoryPlan) -> bool:
    def layout(q: MemoryPlan) -> set:
        return {(i, pl.offset, pl.size) for i, pl in q.placements.items() if pl.region == "persistent"}
    return not base.packed and not p.packed and base.persistent_bytes == p.persistent_bytes and layout(base) == layout(p)


def _init_subgraphs(graph: Graph) -> list[int]:
    """Subgraphs the main subgraph runs once through CALL_ONCE (variable initialisation)."""
    return sorted({op.options.init_subgraph_index for op in graph.main.operators
                   if op.opcode == "CALL_ONCE" and op.options is not None})


def _needs_own_persistent(graph: Graph, p: MemoryPlan) -> bool:
    """Whether an init subgraph keeps persistent data other than variable handles (which map to the main storage)."""
    sg = graph.subgraphs[p.subgraph]
    return any(pl.region == "persistent" and sg.tensors[i].type_name != "RESOURCE" for i, pl in p.placements.items())


def _compiled_entry(fn: Callable, args: tuple) -> Callable | None:
    """The compiled overload a numba dispatcher `fn` would run for exactly these arguments, or None.

    A dispatcher call types every argument on each call (about 0.15-0.3 µs a step); the overload's
    entry point only unboxes them. Step arguments are fixed objects bound at load, so their types
    cannot change between runs and the lookup done once here stays valid. None (keep the
    dispatcher) when `fn` is not a dispatcher or has no overload for these exact types.
    """
    overloads, typeof = getattr(fn, "overloads", None), getattr(fn, "typeof_pyval", None)
    if not isinstance(overloads, Mapping) or typeof is None:
        return None
    try:
        key = tuple(typeof(a) for a in args)
    except Exception:  # an argument numba cannot type: leave the call to the dispatcher
        return None
    cres = overloads.get(key)
    return getattr(cres, "entry_point", None)


def _plain(a: object) -> bool:
    return type(a) is np.ndarray


def _direct_step(fn: Callable, args: tuple) -> Step:
    """One step with the cheapest call that does the same work.

    numba kernels: their compiled entry point. numpy calls with fixed operands: np.copyto of equal
    dtype and shape is an item assignment (no casting or broadcasting to decide), np.matmul of 2-D
    contiguous operands into a C-contiguous, non-overlapping output is np.dot (both are one BLAS
    call; dot skips the ufunc machinery, about 0.5 µs on small matrices).
    """
    if fn is np.copyto and len(args) == 2 and all(map(_plain, args)):
        dst, src = args
        if dst.dtype == src.dtype and dst.shape == src.shape:
            return operator.setitem, (dst, Ellipsis, src)
        return fn, args
    if fn is np.matmul and len(args) == 3 and all(map(_plain, args)):
        x, w, out = args
        if (x.ndim == w.ndim == out.ndim == 2 and x.dtype == w.dtype == out.dtype == np.float32
                and out.flags.c_contiguous and (x.flags.c_contiguous or x.flags.f_contiguous)
                and (w.flags.c_contiguous or w.flags.f_contiguous)
                and not np.may_share_memory(out, x) and not np.may_share_memory(out, w)):
            return np.dot, args
        return fn, args
    entry = _compiled_entry(fn, args)
    return (fn, args) if entry is None else (entry, args)


def _expanded(steps: Sequence[Step]) -> list[Step]:
    """Python drivers that declare `as_steps` replaced by the calls they make."""
    out: list[Step] = []
    for fn, args in steps:
        expand = getattr(fn, "as_steps", None)
        out += _expanded(expand(*args)) if expand is not None else [(fn, args)]
    return out


def _direct_steps(steps: Sequence[Step], arena: np.ndarray | None = None) -> list[Step]:
    """The steps run() calls: drivers expanded into their calls, runs of consecutive copies inside
    the arena fused into one (shape.fuse_moves), each call made direct (_direct_step). Done after
    warm-up, when every kernel has its overload."""
    flat = _expanded(steps)
    if arena is not None:
        flat = fuse_moves(flat, arena)
    return [_direct_step(fn, args) for fn, args in flat]


def _is_noop(sg: Subgraph, op_index: int, p: MemoryPlan) -> bool:
    """True when nothing is left to do per request: a view op or fully placed concat (the planner put the
    result in place), a variable handle, or CALL_ONCE (its init subgraph ran at load)."""
    op = sg.operators[op_index]
    if op.opcode in ("VAR_HANDLE", "CALL_ONCE"):
        return True
    outs = [o for o in op.outputs if o >= 0]
    if len(outs) == 1:
        out = p.placements.get(outs[0])
        if out is not None and out.alias_kind == "view" and out.alias_of in op.inputs:
            return True
    if op.opcode == "CONCATENATION" and outs:
        fa = getattr(op.options, "fused_activation_function", "NONE")
        placed = [p.placements.get(i) for i in op.inputs if i >= 0]
        return fa in ("NONE", None) and bool(placed) and all(
            q is not None and q.alias_kind == "concat" and q.alias_of == outs[0] for q in placed)
    return False


def _single_readers(sg: Subgraph) -> dict[int, int]:
    """tensor -> the operator that reads it, for tensors read once by one operator and not subgraph outputs."""
    uses: dict[int, list[int]] = {}
    for k, op in enumerate(sg.operators):
        for i in op.inputs:
            if i >= 0:
                uses.setdefault(i, []).append(k)
    outputs = set(sg.outputs)
    return {t: ks[0] for t, ks in uses.items() if len(ks) == 1 and t not in outputs}


def _fc_chain(sg: Subgraph, run: Sequence[int], j: int, readers: Mapping[int, int],
              entry_of: Callable[[int], object], arrays: Callable) -> tuple[Step, int] | None:
    """(one fused step, how many ops it covers) for the longest chain of FCs of one kind (float:
    matvec.bind_chain; int8 on the integer dot-product path: qdot.bind_qchain) starting at run[j]
    where each one's output is read only by the next op in run order (so the intermediates are
    unobservable); None when fewer than two ops chain or the chain does not fit."""
    layers = []
    kinds = ((fc_chain_layer, bind_chain), (qfc_chain_layer, bind_qchain))
    kind = None
    k = j
    while k < len(run):
        op = sg.operators[run[k]]
        if op.opcode != "FULLY_CONNECTED" or len(op.outputs) != 1:
            break
        if layers and readers.get(sg.operators[run[k - 1]].outputs[0]) != run[k]:
            break
        if layers and op.inputs[0] != sg.operators[run[k - 1]].outputs[0]:
            break
        ctx, ins, outs, _ = arrays(run[k])
        entry = entry_of(run[k])
        layer = None
        for kd in kinds if kind is None else (kind,):  # the first layer decides the chain's kind
            layer = kd[0](entry, ctx, ins, outs)
            if layer is not None:
                kind = kd
                break
        if layer is None:
            break
        layers.append(layer)
        k += 1
    step = kind[1](layers) if len(layers) >= 2 else None
    return None if step is None else (step, len(layers))


_SEQUENCES = (list, tuple)


def _prepare(m: _Model, arena: np.ndarray) -> None:
    """Fill in what run() uses: the direct steps and the input slots."""
    m.run_steps = _direct_steps(m.steps, arena)
    m.input_slots = tuple((view, spec.dtype, tuple(spec.shape)) for view, spec in zip(m.input_views, m.inputs))


class Executor:
    """Loads, plans, binds and warms up models; `run()` executes one request in the arena."""

    def __init__(self, models: Mapping[str, str | Path | Graph], *, budget: int | None = None,
                 threads: int = 1, aliasing: Aliasing = Aliasing(), strategy: str = "default",
                 order: str = "file", plans: Mapping[str, str | Path | MemoryPlan] | None = None,
                 registry: KernelRegistry | None = None,
                 progress: Callable[[str], None] | None = None):
        if not models:
            raise PlanError("an executor needs at least one model")
        self.budget = budget
        self.threads = threads
        self.registry = registry if registry is not None else default_registry()
        self._progress = progress or (lambda message: None)
        set_threads(threads)
        t0 = time.perf_counter()
        graphs = {name: src if isinstance(src, Graph) else load_model(src) for name, src in models.items()}
        inits = {name: _init_subgraphs(graph) for name, graph in graphs.items()}
        for name, graph in graphs.items():
            for k in (0, *inits[name]):  # every unsupported op of the model, named, at load
                self.registry.resolve(graph.subgraphs[k])
        self.plans = {name: self._plan(name, graph, (plans or {}).get(name), aliasing, strategy, order)
                      for name, graph in graphs.items()}
        # Init subgraphs (CALL_ONCE) run at load and on reset_state, never during a request, so they
        # share the activation region; their variable handles resolve to the main plan's storage.
        init_plans = {name: {k: self._plan(name, graphs[name], None, aliasing, strategy, "file", subgraph=k)
                             for k in inits[name]} for name in graphs}
        self.persistent_bytes = sum(p.persistent_bytes for p in self.plans.values()) + sum(
            ip.persistent_bytes for n, per in init_plans.items() for ip in per.values() if _needs_own_persistent(graphs[n], ip))
        self.activation_bytes = max([p.activation_bytes for p in self.plans.values()]
                                    + [ip.activation_bytes for per in init_plans.values() for ip in per.values()])
        self.arena_bytes = self.persistent_bytes + self.activation_bytes
        self._check_budget(graphs, (aliasing, strategy, order))
        self.arena = Arena(self.persistent_bytes, self.activation_bytes)
        self.load_seconds = time.perf_counter() - t0
        self._options = (aliasing, strategy, order)
        self._graphs, self._init_plans = graphs, init_plans
        # model -> input shapes -> resized binding; _active: the shapes run() uses (None = stored)
        self._variants: dict[str, dict[tuple, _Variant]] = {name: {} for name in graphs}
        self._active: dict[str, tuple | None] = {name: None for name in graphs}
        self._bind_all()
        self.models = tuple(self._models)
        t1 = time.perf_counter()
        self._warm_up()
        self._prepare_all()  # now every kernel has its compiled overload
        self.reset_state()
        self.compile_seconds = time.perf_counter() - t1

    # ---- load ---------------------------------------------------------------------------------

    def _bind_all(self) -> None:
        """Bind every model (stored shapes, init subgraphs, resized variants) to the current arena."""
        self._base: dict[str, _Model] = {}
        self._states: dict[str, dict[str, np.ndarray]] = {}
        offset = 0
        for name, graph in self._graphs.items():
            state: dict[str, np.ndarray] = {}
            m = self._bind(name, graph, self.plans[name], offset, state)
            offset += self.plans[name].persistent_bytes
            for k, ip in self._init_plans[name].items():
                own = _needs_own_persistent(graph, ip)
                m.init_steps += self._bind(name, graph, ip, offset, state).steps
                offset += ip.persistent_bytes if own else 0
            self._base[name], self._states[name] = m, state
        for name, variants in self._variants.items():
            for v in variants.values():
                v.bound = self._bind_variant(name, v)
        self._models = {name: self._base[name] if key is None else self._variants[name][key].bound
                        for name, key in self._active.items()}
        self._prepare_all()

    def _prepare_all(self) -> None:
        for m in self._base.values():
            _prepare(m, self.arena.buffer)
        for variants in self._variants.values():
            for v in variants.values():
                if v.bound is not None:
                    _prepare(v.bound, self.arena.buffer)

    def _bind_variant(self, name: str, v: _Variant) -> _Model:
        m = self._bind(name, v.graph, v.plan, v.persistent_offset, self._states[name])
        m.init_steps = self._base[name].init_steps
        return m

    def _plan(self, name: str, graph: Graph, given: str | Path | MemoryPlan | None, aliasing: Aliasing,
              strategy: str, order: str, subgraph: int = 0) -> MemoryPlan:
        sg = graph.subgraphs[subgraph]
        if given is not None:
            if not isinstance(given, MemoryPlan):
                given = MemoryPlan.from_json(json.loads(Path(given).read_text()), graph)
            self._check_scratch(name, given, graph.subgraphs[given.subgraph])
            return given
        return plan(graph, budget=None, strategy=strategy, order=order, aliasing=aliasing, subgraph=subgraph,
                    kernel_info=lambda op: self.registry.info(OpContext.of(sg, op)))

    def _check_scratch(self, name: str, p: MemoryPlan, sg: Subgraph) -> None:
        """A plan from a file must give each op at least the scratch its kernel here needs: kernels
        choose paths by CPU (and thread count), so a plan written on another machine may not."""
        for k in [*p.folded, *p.order]:  # folded ops use their scratch once, at load
            need = int(self.registry.info(OpContext.of(sg, sg.operators[k])).scratch_bytes or 0)
            have = p.scratch[k].size if k in p.scratch else 0
            if need > have:
                raise PlanError(
                    f"plan for model {name!r}: operator {k} ({sg.operators[k].opcode}) needs {need:,} bytes of "
                    f"kernel scratch on this machine but the plan gives it {have:,}; the plan was made for "
                    f"other kernels (another CPU, thread count or edgert version): plan the model here "
                    f"(edgert plan) or leave the plan out")

    def _check_budget(self, graphs: Mapping[str, Graph] | None = None, options: tuple | None = None) -> None:
        if self.budget is None or self.arena_bytes <= self.budget:
            return
        if graphs is not None and len(graphs) == 1 and self.arena_bytes == next(iter(self.plans.values())).arena_bytes:
            # One model: the planner's own error says what each planner option would need.
            (name, graph), (aliasing, strategy, order) = next(iter(graphs.items())), options
            sg = graph.main
            plan(graph, budget=self.budget, strategy=strategy, order=order, aliasing=aliasing,
                 kernel_info=lambda op: self.registry.info(OpContext.of(sg, op)))
        lower = self.persistent_bytes + max(p.lower_bound_bytes - p.persistent_bytes for p in self.plans.values())
        detail = ", ".join(f"{n}: {p.persistent_bytes:,} persistent + {p.activation_bytes:,} activations"
                           for n, p in self.plans.items())
        raise BudgetExceeded(
            f"the models need a {self.arena_bytes:,}-byte arena but the budget is {self.budget:,} bytes "
            f"(lower bound {lower:,}; {detail}); raise the budget or serve fewer models per daemon",
            needed=self.arena_bytes, lower_bound=lower, budget=self.budget)

    def _views(self, sg: Subgraph, p: MemoryPlan, persistent_offset: int,
               state: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        """An array per planned tensor: region views for roots, sub-views of the parent for concat parts.

        A resource handle's array is its variable's storage (1-D bytes), shared by every handle
        with the same container/shared_name, in whichever subgraph of the model.
        """
        handle_names = {o: f"{op.options.container or ''}/{op.options.shared_name or ''}" for op in sg.operators
                        if op.opcode == "VAR_HANDLE" and op.options is not None for o in op.outputs}
        regions = {"persistent": self.arena.region("persistent")[persistent_offset:],
                   "activation": self.arena.region("activation")}
        views: dict[int, np.ndarray] = {}

        def resolve(index: int, depth: int = 0) -> np.ndarray:
            if index in views:
                return views[index]
            if depth > len(p.placements):
                raise PlanError(f"alias cycle at tensor {sg.tensors[index].name!r}")
            pl = p.placements[index]
            t = sg.tensors[index]
            if t.type_name == "RESOURCE":
                key = handle_names.get(index, f"tensor {index} of subgraph {sg.index}")
                if key not in state:
                    region = regions[pl.region]
                    if pl.offset + pl.size > region.nbytes:
                        raise PlanError(f"variable {key!r} of subgraph {sg.name!r} has no storage: "
                                        "it is initialised but never used by the main subgraph")
                    state[key] = region[pl.offset:pl.offset + pl.size]
                view = state[key]
            elif pl.alias_kind == "concat":
                parent = resolve(pl.alias_of, depth + 1)
                axis = pl.concat_axis
                index_expr = [slice(None)] * parent.ndim
                index_expr[axis] = slice(pl.concat_start, pl.concat_start + t.shape[axis])
                view = parent[tuple(index_expr)]
                if view.shape != t.shape:
                    raise PlanError(f"concat placement of {t.name!r} gives shape {view.shape}, tensor is {t.shape}")
            else:
                view = self.arena.view(regions[pl.region], pl.offset, t.shape, t.dtype)
            views[index] = view
            return view

        for index in p.placements:
            resolve(index)
        return views

    def _bind(self, name: str, graph: Graph, p: MemoryPlan, persistent_offset: int,
              state: dict[str, np.ndarray]) -> _Model:
        sg = graph.subgraphs[p.subgraph]
        views = self._views(sg, p, persistent_offset, state)
        scratch_region = self.arena.region("activation")
        regions_persistent = self.arena.region("persistent")[persistent_offset:]

        def bind(op_index: int) -> Step:
            ctx, ins, outs, scratch = arrays(op_index)
            entry = self.registry.lookup(ctx)
            pk = p.packed.get(op_index)
            if pk is None:
                return entry.bind(ctx, ins, outs, scratch)
            packed = regions_persistent[pk.offset:pk.offset + pk.size]
            return entry.bind(ctx, ins, outs, scratch, packed=packed)

        def arrays(op_index: int) -> tuple[OpContext, list, list, np.ndarray | None]:
            op = sg.operators[op_index]
            ctx = OpContext.of(sg, op)
            ins = [None if i < 0 else (sg.tensors[i].data if sg.tensors[i].is_constant else views[i]) for i in op.inputs]
            outs = [views[o] for o in op.outputs]
            s = p.scratch.get(op_index)
            scratch = scratch_region[s.offset:s.offset + s.size] if s is not None and s.size else None
            return ctx, ins, outs, scratch

        # Folded ops (constant-only inputs: float16 DEQUANTIZE, DENSIFY, ...) run once, now.
        for k in p.folded:
            fn, args = bind(k)
            fn(*args)
        steps = []
        run = [k for k in p.order if not _is_noop(sg, k, p)]
        readers = _single_readers(sg)
        j = 0
        while j < len(run):
            chain = _fc_chain(sg, run, j, readers, lambda k: self.registry.lookup(OpContext.of(sg, sg.operators[k])),
                              arrays)
            if chain is not None:
                step, length = chain
                steps.append(step)
                j += length
            else:
                steps.append(bind(run[j]))
                j += 1

        def spec(i: int) -> TensorSpec:
            t = sg.tensors[i]
            return TensorSpec(t.name, t.shape, t.dtype, t.quantization)

        return _Model(
            name=name, graph=graph, plan=p,
            inputs=[spec(i) for i in sg.inputs], outputs=[spec(i) for i in sg.outputs],
            input_views=[views[i] for i in sg.inputs],
            output_views=[sg.tensors[i].data if sg.tensors[i].is_constant else views[i] for i in sg.outputs],
            steps=steps, init_steps=[], persistent_offset=persistent_offset)

    def _warm_up(self) -> None:
        """Run every step once per model so numba compiles (or loads from cache) before serving."""
        total = sum(len(m.steps) + len(m.init_steps) for m in self._models.values())
        done = 0
        for m in self._models.values():
            for v in m.input_views:
                v[...] = 0
            for fn, args in m.init_steps + m.steps:
                fn(*args)
                done += 1
                if done % 8 == 0 or done == total:
                    self._progress(f"compiling kernels {done}/{total}")

    # ---- requests -----------------------------------------------------------------------------

    def _model(self, model: str) -> _Model:
        m = self._models.get(model)
        if m is None:
            raise RequestError(f"unknown model {model!r} (serving: {', '.join(self.models)})", kind="unknown_model")
        return m

    def input_specs(self, model: str) -> list[TensorSpec]:
        return list(self._model(model).inputs)

    def output_specs(self, model: str) -> list[TensorSpec]:
        return list(self._model(model).outputs)

    def _ordered_inputs(self, m: _Model, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list:
        if isinstance(inputs, Mapping):
            names = [s.name for s in m.inputs]
            unknown = [k for k in inputs if k not in names]
            if unknown:
                raise RequestError(f"model {m.name!r} has no input named {unknown[0]!r} (inputs: {', '.join(names)})",
                                   kind="bad_input_name")
            missing = [k for k in names if k not in inputs]
            if missing:
                raise RequestError(f"model {m.name!r}: input {missing[0]!r} missing", kind="bad_input_count")
            return [inputs[k] for k in names]
        inputs = list(inputs)
        if len(inputs) != len(m.inputs):
            raise RequestError(f"model {m.name!r} takes {len(m.inputs)} input(s), got {len(inputs)}", kind="bad_input_count")
        return inputs

    def _check_inputs(self, m: _Model, values: list) -> None:
        for spec, value in zip(m.inputs, values):
            value = np.asarray(value)
            if value.dtype != spec.dtype:
                raise RequestError(f"model {m.name!r} input {spec.name!r}: dtype {value.dtype} given, {spec.dtype} expected",
                                   kind="bad_dtype")
            if value.shape != spec.shape:
                raise RequestError(f"model {m.name!r} input {spec.name!r}: shape {list(value.shape)} given, "
                                   f"{list(spec.shape)} expected", kind="bad_shape")

    def run(self, model: str, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], *,
            copy: bool = True) -> list[np.ndarray]:
        """Run one request. Outputs are copies, or with copy=False views into the arena that stay
        valid only until the next run() on this executor."""
        m = self._models.get(model)
        if m is None:
            m = self._model(model)  # raises unknown_model
        # Common case first: a list/tuple of numpy arrays of the right dtype and shape (one input
        # without a loop: 0.25 µs of the 1.5 µs a 3-op model takes); anything else (a mapping,
        # array-likes, an error) takes the full path, which names what is wrong.
        slots = m.input_slots
        ready = False
        if type(inputs) in _SEQUENCES:
            if len(inputs) == 1 and len(slots) == 1:
                value = inputs[0]
                view, dtype, shape = slots[0]
                # `is` first: numpy's builtin dtypes are singletons, and == costs a call
                if type(value) is np.ndarray and value.shape == shape and (value.dtype is dtype or value.dtype == dtype):
                    view[...] = value
                    ready = True
            elif len(inputs) == len(slots) and all(type(v) is np.ndarray and v.dtype == d and v.shape == s
                                                   for (_, d, s), v in zip(slots, inputs)):
                for (view, _, _), value in zip(slots, inputs):
                    view[...] = value
                ready = True
        if not ready:
            values = self._ordered_inputs(m, inputs)
            self._check_inputs(m, values)
            for view, value in zip(m.input_views, values):
                np.copyto(view, value, casting="no")
        for fn, args in m.run_steps:
            fn(*args)
        return [v.copy() for v in m.output_views] if copy else list(m.output_views)

    # ---- dynamic shapes -----------------------------------------------------------------------

    def resize_inputs(self, model: str, shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]]) -> list[TensorSpec]:
        """Make run() take `model`'s inputs at new shapes (by input name, or a list in input order).

        Only dims marked -1 in an input's shape_signature may change. The resized model is planned
        with the executor's options, checked against the budget for the whole arena (every cached
        shape of every model), bound and warmed up here, so run() never plans or compiles. Bindings
        are cached per shape: switching back (to the stored shapes, too) costs nothing. On any
        error (BudgetExceeded, a shape the model cannot take) the executor keeps serving the
        shapes it had. Returns the new input specs.
        """
        self._model(model)
        base_graph = self._graphs[model]
        resized = with_input_shapes(base_graph, shapes)
        key = tuple(tuple(resized.main.tensors[i].shape) for i in resized.inputs)
        stored = tuple(tuple(base_graph.main.tensors[i].shape) for i in base_graph.inputs)
        if key == stored:
            self._active[model] = None
        elif key not in self._variants[model]:
            self._add_variant(model, resized, key)
            self._active[model] = key
        else:
            self._active[model] = key
        self._models[model] = self._base[model] if self._active[model] is None else self._variants[model][key].bound
        return self.input_specs(model)

    def _add_variant(self, name: str, graph: Graph, key: tuple) -> None:
        self.registry.resolve(graph.main)  # a kernel that cannot take the new shapes fails here, by name
        aliasing, strategy, order = self._options
        p = self._plan(name, graph, None, aliasing, strategy, order)
        shared = _shares_persistent(self.plans[name], p)
        own = 0 if shared else p.persistent_bytes
        persistent = self.persistent_bytes + own
        activation = max(self.activation_bytes, p.activation_bytes)
        if self.budget is not None and persistent + activation > self.budget:
            shape_text = ", ".join(f"{graph.main.tensors[i].name}={list(graph.main.tensors[i].shape)}" for i in graph.inputs)
            lower = persistent + max(q.lower_bound_bytes - q.persistent_bytes for q in [p, *self.plans.values()])
            raise BudgetExceeded(
                f"resizing model {name!r} to {shape_text} needs a {persistent + activation:,}-byte arena "
                f"({persistent:,} persistent + {activation:,} activations; this shape alone plans "
                f"{p.persistent_bytes:,} + {p.activation_bytes:,}) but the budget is {self.budget:,} bytes; "
                f"still serving {name!r} at its previous shapes",
                needed=persistent + activation, lower_bound=lower, budget=self.budget,
                hints=tuple(getattr(p, "hints", ())))
        v = _Variant(graph, p, self._base[name].persistent_offset if shared else self.persistent_bytes, own)
        if persistent > self.arena.persistent_bytes or activation > self.arena.activation_bytes:
            self._grow(persistent, activation)
        v.bound = self._bind_variant(name, v)
        # Warm-up compiles kernels for the new shapes; it runs the model, which may assign its
        # variables, so the persistent bytes are put back afterwards.
        saved = self.arena.region("persistent").copy()
        try:
            for view in v.bound.input_views:
                view[...] = 0
            for fn, args in v.bound.steps:
                fn(*args)
        finally:
            self.arena.region("persistent")[...] = saved
        _prepare(v.bound, self.arena.buffer)
        self._variants[name][key] = v
        self.persistent_bytes, self.activation_bytes = persistent, activation
        self.arena_bytes = persistent + activation

    def _grow(self, persistent: int, activation: int) -> None:
        """Move to a larger arena: rebind every model and variant, carry the persistent bytes over."""
        old = self.arena
        self.arena = Arena(max(persistent, old.persistent_bytes), max(activation, old.activation_bytes))
        self._bind_all()
        # Binding refills folded and packed data; the copy also brings variables' current values.
        self.arena.region("persistent")[:old.persistent_bytes] = old.region("persistent")

    def reset_state(self, model: str | None = None) -> None:
        """Return stateful models to their initial state: run their CALL_ONCE init subgraphs again."""
        for name in ([model] if model is not None else self.models):
            for fn, args in self._model(name).init_steps:
                fn(*args)

    def claim_thread(self) -> None:
        """Apply the `threads` setting to the calling thread (numba's count is per thread): call it once
        from the thread that will run requests, if that is not the one that built the executor."""
        set_threads(self.threads)

    def kernel_count(self) -> int:
        """How many compiled numba kernel signatures this process holds."""
        from edgert.kernels.registry import compiled_signature_count
        return compiled_signature_count(fn for m in self._models.values() for fn, _ in m.steps + m.init_steps)
