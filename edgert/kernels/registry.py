"""Maps operators to kernels, and tells the planner what each kernel needs (scratch, in-place, strides).

A kernel family module exposes `register(registry)` and adds `KernelEntry` values for the ops it
runs. The executor asks the registry for an entry per operator at load time (so an unsupported
op fails at load, never at request time) and calls `entry.bind(...)` once per step to get a
`Step`: a callable and its arguments, already bound to arena views. Running a model is then
`for fn, args in steps: fn(*args)`. A Python driver step may set `fn.as_steps(*args) -> [Step]`,
the same calls as separate steps, which the executor runs instead (see docs/runtime.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from edgert.errors import UnsupportedOpError
from edgert.model.graph import Operator, Subgraph, Tensor

Step = tuple[Callable, tuple]


@dataclass(frozen=True)
class OpContext:
    """Everything a kernel may know about one operator: the op and its tensors (None = optional input absent)."""

    op: Operator
    inputs: tuple[Tensor | None, ...]
    outputs: tuple[Tensor, ...]
    subgraph: Subgraph

    @classmethod
    def of(cls, subgraph: Subgraph, op: Operator) -> "OpContext":
        return cls(
            op=op,
            inputs=tuple(subgraph.tensor(i) for i in op.inputs),
            outputs=tuple(subgraph.tensors[i] for i in op.outputs),
            subgraph=subgraph,
        )


def _no_scratch(ctx: OpContext) -> int:
    return 0


def _no_inplace(ctx: OpContext) -> tuple[int, ...]:
    return ()


@dataclass(frozen=True)
class KernelEntry:
    """One kernel for one op.

    supports(ctx) -> None when this kernel runs ctx, else a short reason ("int8 input").
    bind(ctx, ins, outs, scratch) -> Step. `ins`/`outs` are numpy arrays with the tensors' shapes
      and dtypes (arena views or constant views; None for absent optional inputs). An output may
      be a non-contiguous view when `strided_output` is True. `scratch` is a 1-D uint8 array of
      scratch_bytes(ctx) bytes (None when 0), valid only during the step.
    scratch_bytes(ctx) -> bytes of one-step scratch the kernel needs.
    inplace(ctx) -> input positions output 0 may share memory with (the kernel is correct when
      out is exactly that input's memory).
    strided_output: the kernel writes correctly into a non-contiguous output view (needed for
      concat placement).
    packed_bytes(ctx) -> bytes of persistent data the kernel derives once from constants (weights
      repacked to the layout its loop wants). When > 0 the executor calls
      bind(ctx, ins, outs, scratch, packed=<1-D uint8 array in the persistent region>) and bind
      fills it at load; the bytes are part of the plan and of the budget.
    """

    op: str
    supports: Callable[[OpContext], str | None]
    bind: Callable[[OpContext, list, list, np.ndarray | None], Step]
    scratch_bytes: Callable[[OpContext], int] = _no_scratch
    inplace: Callable[[OpContext], tuple[int, ...]] = _no_inplace
    strided_output: bool = False
    packed_bytes: Callable[[OpContext], int] = _no_scratch


@dataclass(frozen=True)
class KernelInfo:
    """What the planner needs to know of the kernel chosen for one operator."""

    scratch_bytes: int
    inplace: tuple[int, ...]
    strided_output: bool
    packed_bytes: int = 0


# Kernel family modules, imported by default_registry(). Each has register(registry).
FAMILY_MODULES: tuple[str, ...] = (
    "edgert.kernels.conv",
    "edgert.kernels.pool",
    "edgert.kernels.elementwise",
    "edgert.kernels.reduce",
    "edgert.kernels.shape",
    "edgert.kernels.resize",
    "edgert.kernels.quant",
    "edgert.kernels.qactivations",
    "edgert.kernels.state",
    "edgert.kernels.custom",
)


@dataclass
class KernelRegistry:
    """Op name (or "CUSTOM:<code>") -> candidate kernels, tried in registration order."""

    entries: dict[str, list[KernelEntry]] = field(default_factory=dict)

    def add(self, entry: KernelEntry) -> None:
        self.entries.setdefault(entry.op, []).append(entry)

    def add_custom(self, custom_code: str, entry: KernelEntry) -> None:
        """Register a kernel for a CUSTOM operator by its custom code (e.g. "MaxPoolingWithArgmax2D")."""
        self.entries.setdefault(f"CUSTOM:{custom_code}", []).append(entry)

    def copy(self) -> "KernelRegistry":
        return KernelRegistry({k: list(v) for k, v in self.entries.items()})

    @staticmethod
    def key(op: Operator) -> str:
        return f"CUSTOM:{op.custom_code}" if op.opcode == "CUSTOM" else op.opcode

    def find(self, ctx: OpContext) -> KernelEntry | str:
        """The first entry that supports ctx, or the reason none does."""
        candidates = self.entries.get(self.key(ctx.op), [])
        if not candidates:
            return "no kernel for this op"
        reasons = []
        for entry in candidates:
            reason = entry.supports(ctx)
            if reason is None:
                return entry
            reasons.append(reason)
        return "; ".join(dict.fromkeys(reasons))

    def lookup(self, ctx: OpContext) -> KernelEntry:
        found = self.find(ctx)
        if isinstance(found, str):
            raise UnsupportedOpError(describe_unsupported([(ctx, found)]))
        return found

    def resolve(self, subgraph: Subgraph) -> list[KernelEntry]:
        """An entry per operator of the subgraph; raises one UnsupportedOpError naming every unsupported op."""
        found, missing = [], []
        for op in subgraph.operators:
            ctx = OpContext.of(subgraph, op)
            entry = self.find(ctx)
            if isinstance(entry, str):
                missing.append((ctx, entry))
            else:
                found.append(entry)
        if missing:
            raise UnsupportedOpError(describe_unsupported(missing))
        return found

    def info(self, ctx: OpContext) -> KernelInfo:
        entry = self.lookup(ctx)
        return KernelInfo(entry.scratch_bytes(ctx), tuple(entry.inplace(ctx)), entry.strided_output,
                          entry.packed_bytes(ctx))


def describe_unsupported(missing: list[tuple[OpContext, str]]) -> str:
    """One line per distinct (op, version, dtypes, reason), with how many operators it covers."""
    counts: dict[str, int] = {}
    for ctx, reason in missing:
        dtypes = ",".join(str(t.dtype) for t in ctx.inputs if t is not None)
        line = f"{ctx.op.name} v{ctx.op.version} ({dtypes} -> {','.join(str(t.dtype) for t in ctx.outputs)}): {reason}"
        counts[line] = counts.get(line, 0) + 1
    lines = [f"  {line}" + (f" [x{n}]" if n > 1 else "") for line, n in counts.items()]
    return f"unsupported operators ({len(missing)}):\n" + "\n".join(lines)


def compiled_signature_count(step_functions: Iterable[Callable] = ()) -> int:
    """Compiled numba signatures of edgert's kernels in this process (what `memory` reports as kernels):
    the module-level kernels of every loaded family plus kernels made by factories at bind time,
    which the caller passes as its steps' functions."""
    import sys

    from numba.core.registry import CPUDispatcher

    found: dict[int, CPUDispatcher] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("edgert.kernels.") and module is not None:
            found.update((id(v), v) for v in vars(module).values() if isinstance(v, CPUDispatcher))
    found.update((id(f), f) for f in step_functions if isinstance(f, CPUDispatcher))
    return sum(len(d.signatures) for d in found.values())


def default_registry() -> KernelRegistry:
    """A fresh registry with every built-in kernel family."""
    registry = KernelRegistry()
    for name in FAMILY_MODULES:
        importlib.import_module(name).register(registry)
    return registry
