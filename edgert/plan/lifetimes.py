"""Lifetimes: which ops run once at load (folding), which tensors persist, and when each activation is live.

Conventions (the runtime relies on them):
- A *step* is a position in the per-request execution order (`MemoryPlan.order`), 0..n-1.
- A tensor is live on steps [first, last], both inclusive. Graph inputs have first = 0 (they are
  written before step 0 and must survive it); graph outputs have last = n-1; a tensor written but
  never read has last = first. A non-constant tensor that is read but written by nobody (and is
  not a graph input) is treated like a graph input.
- Persistent tensors (outputs of folded ops, variables, resource-variable handles) live for the
  whole run and are reported with first = 0, last = n-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from edgert.errors import PlanError
from edgert.model.graph import Operator, Subgraph

# Ops with effects or state: never run once at load even when every input is constant.
NEVER_FOLD = frozenset({
    "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "IF", "WHILE", "CALL",
    "RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL",
})
# Ops whose outputs are handles to state that outlives a request.
STATE_HANDLE_OPS = frozenset({"VAR_HANDLE"})


@dataclass(frozen=True)
class Lifetime:
    """Steps [first, last] (inclusive) on which `tensor` must hold its value."""

    tensor: int
    first: int
    last: int


def fold_ops(sg: Subgraph) -> list[int]:
    """Ops whose inputs are all constant, absent or outputs of folded ops, in a valid order."""
    known = {t.index for t in sg.tensors if t.is_constant}
    folded: list[int] = []
    done: set[int] = set()
    changed = True
    while changed:  # fixpoint, so a file that is not topologically sorted still folds chains
        changed = False
        for op in sg.operators:
            if op.index in done or op.opcode in NEVER_FOLD or not op.outputs:
                continue
            if all(i < 0 or i in known for i in op.inputs):
                folded.append(op.index)
                done.add(op.index)
                known.update(o for o in op.outputs if o >= 0)
                changed = True
    return folded


def persistent_tensors(sg: Subgraph, folded: Iterable[int]) -> set[int]:
    """Tensors that live across requests: folded outputs, variables, state handles."""
    out = {t.index for t in sg.tensors if t.is_variable and not t.is_constant}
    for k in folded:
        out.update(o for o in sg.operators[k].outputs if o >= 0)
    for op in sg.operators:
        if op.opcode in STATE_HANDLE_OPS:
            out.update(o for o in op.outputs if o >= 0)
    return out


def state_bytes(sg: Subgraph, handle: int) -> int:
    """Bytes a resource-variable handle must hold: the largest value read from or assigned to it here."""
    size = sg.tensors[handle].nbytes
    for op in sg.operators:
        if op.opcode == "READ_VARIABLE" and op.inputs and op.inputs[0] == handle:
            size = max(size, max((sg.tensors[o].nbytes for o in op.outputs if o >= 0), default=0))
        elif op.opcode == "ASSIGN_VARIABLE" and len(op.inputs) > 1 and op.inputs[0] == handle and op.inputs[1] >= 0:
            size = max(size, sg.tensors[op.inputs[1]].nbytes)
    return size


def op_tensors(op: Operator) -> tuple[list[int], list[int]]:
    """(read, written) tensor indices of an op; intermediates count as written and read at the step."""
    reads = [i for i in op.inputs if i >= 0] + [i for i in op.intermediates if i >= 0]
    writes = [o for o in op.outputs if o >= 0] + [i for i in op.intermediates if i >= 0]
    return reads, writes


def check_order(sg: Subgraph, order: Sequence[int], folded: Iterable[int]) -> None:
    """Raise PlanError unless `order` runs every non-folded op once, each after its producers."""
    folded = set(folded)
    expected = [op.index for op in sg.operators if op.index not in folded]
    if sorted(order) != sorted(expected):
        raise PlanError(
            f"execution order must list each of the {len(expected)} non-folded operators once "
            f"(got {len(order)} entries)")
    producer = {}
    for op in sg.operators:
        for o in op.outputs:
            if o >= 0:
                producer[o] = op.index
    done = set(folded)
    for k in order:
        op = sg.operators[k]
        for i in op.inputs:
            p = producer.get(i)
            if i >= 0 and p is not None and p not in done:
                raise PlanError(
                    f"execution order runs op {k} ({op.name}) before op {p} ({sg.operators[p].name}) "
                    f"which writes its input {sg.tensors[i].name!r}")
        done.add(k)


def lifetimes(sg: Subgraph, order: Sequence[int], exclude: set[int]) -> dict[int, Lifetime]:
    """Lifetime of every non-constant tensor used by the ops of `order` or the graph's ends, except `exclude`."""
    n = max(len(order), 1)
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def skip(t: int) -> bool:
        return t < 0 or t in exclude or sg.tensors[t].is_constant

    for t in sg.inputs:
        if not skip(t):
            first[t] = 0
            last[t] = 0
    for step, k in enumerate(order):
        reads, writes = op_tensors(sg.operators[k])
        for t in writes:
            if not skip(t):
                first.setdefault(t, step)
                last[t] = max(last.get(t, step), step)
        for t in reads:
            if not skip(t):
                first.setdefault(t, 0)  # read but never written: behaves like a graph input
                last[t] = max(last.get(t, step), step)
    for t in sg.outputs:
        if not skip(t):
            first.setdefault(t, 0)
            last[t] = n - 1
    return {t: Lifetime(t, first[t], last[t]) for t in first}


def live_bytes(spans: Iterable[tuple[int, int, int]], steps: int) -> list[int]:
    """Bytes live at each step, from (first, last, size) spans."""
    diff = [0] * (steps + 1)
    for first, last, size in spans:
        diff[first] += size
        diff[last + 1] -= size
    out, acc = [], 0
    for k in range(steps):
        acc += diff[k]
        out.append(acc)
    return out
