"""Memory-aware execution order: a topological order of the ops with a low peak of live bytes.

Cost model (aliasing ignored, the planner re-scores candidates with aliasing on): at the step
that runs op o, the bytes live are everything produced earlier and still needed, plus o's outputs
and scratch. Graph inputs are live from the start, graph outputs to the end.

- exact: dynamic programming over the sets of executed ops (each set is one state; chain-like
  graphs have few), used while the number of states stays under a limit;
- heuristic: repeatedly run the ready op with the smallest step peak, preferring ops that free
  the most bytes, then file order.
"""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

from edgert.model.graph import Subgraph
from edgert.plan.lifetimes import op_tensors


class _Model:
    def __init__(self, sg: Subgraph, ops: Sequence[int], sizes: Mapping[int, int], scratch: Mapping[int, int]):
        self.ops = list(ops)
        m = len(self.ops)
        pos = {k: j for j, k in enumerate(self.ops)}
        producer: dict[int, int] = {}
        writes, reads = [], []
        for j, k in enumerate(self.ops):
            r, w = op_tensors(sg.operators[k])
            r = [t for t in dict.fromkeys(r) if t in sizes]
            w = [t for t in dict.fromkeys(w) if t in sizes]
            reads.append(r)
            writes.append(w)
            for t in w:
                producer.setdefault(t, j)
        self.consumers: dict[int, int] = {t: 0 for t in sizes}
        self.preds = [0] * m
        for j in range(m):
            for t in reads[j]:
                self.consumers[t] |= 1 << j
                p = producer.get(t)
                if p is not None and p != j:
                    self.preds[j] |= 1 << p
        self.outputs = {t for t in sg.outputs if t in sizes}
        self.sizes = dict(sizes)
        self.reads, self.writes = reads, writes
        self.out_bytes = [sum(sizes[t] for t in w) + scratch.get(k, 0) for w, k in zip(writes, self.ops)]
        # Live before any op runs: graph inputs and tensors nobody writes.
        self.initial = sum(sizes[t] for t in sizes if t not in producer and (self.consumers[t] or t in self.outputs))
        self.all = (1 << m) - 1
        self.pos = pos

    def freed(self, done: int, j: int) -> int:
        """Bytes that stop being live once op j has run after the ops in `done`."""
        after = done | (1 << j)
        out = 0
        for t in set(self.reads[j]) | set(self.writes[j]):
            if t not in self.outputs and self.consumers[t] & ~after == 0:
                out += self.sizes[t]
        return out

    def peak(self, order: Sequence[int]) -> int:
        live, done, best = self.initial, 0, self.initial
        for k in order:
            j = self.pos[k]
            best = max(best, live + self.out_bytes[j])
            live += self.out_bytes[j] - self.freed(done, j)
            done |= 1 << j
        return best


def _exact(model: _Model, state_limit: int) -> list[int] | None:
    memo: dict[int, tuple[int, int]] = {}  # done mask -> (peak from here, best next op)
    m = len(model.ops)

    def best(done: int, live: int) -> int:
        if done == model.all:
            return 0
        hit = memo.get(done)
        if hit is not None:
            return hit[0]
        if len(memo) >= state_limit:
            raise OverflowError
        result, choice = None, -1
        for j in range(m):
            bit = 1 << j
            if done & bit or model.preds[j] & ~done:
                continue
            step = live + model.out_bytes[j]
            if result is not None and step >= result:
                continue
            nxt = live + model.out_bytes[j] - model.freed(done, j)
            cost = max(step, best(done | bit, nxt))
            if result is None or cost < result:
                result, choice = cost, j
        memo[done] = (result, choice)
        return result

    limit = sys.getrecursionlimit()
    if m + 50 > limit:
        return None
    try:
        best(0, model.initial)
    except OverflowError:
        return None
    order, done = [], 0
    while done != model.all:
        j = memo[done][1]
        order.append(model.ops[j])
        done |= 1 << j
    return order


def _greedy(model: _Model) -> list[int]:
    m = len(model.ops)
    done, live, order = 0, model.initial, []
    while done != model.all:
        choice, key = -1, None
        for j in range(m):
            if done & (1 << j) or model.preds[j] & ~done:
                continue
            fr = model.freed(done, j)
            k = (live + model.out_bytes[j], model.out_bytes[j] - fr, j)
            if key is None or k < key:
                choice, key = j, k
        order.append(model.ops[choice])
        live += model.out_bytes[choice] - model.freed(done, choice)
        done |= 1 << choice
    return order


def candidate_orders(sg: Subgraph, ops: Sequence[int], sizes: Mapping[int, int],
                     scratch: Mapping[int, int] | None = None, state_limit: int = 20000) -> list[list[int]]:
    """Orders worth scoring, best first by the cost model (the given order is always among them)."""
    model = _Model(sg, ops, sizes, scratch or {})
    cands = [list(ops)]
    exact = _exact(model, state_limit) if len(ops) <= 400 else None
    if exact is not None:
        cands.append(exact)
    cands.append(_greedy(model))
    unique = {tuple(c): c for c in cands}
    return sorted(unique.values(), key=model.peak)


def order_peak(sg: Subgraph, order: Sequence[int], sizes: Mapping[int, int],
               scratch: Mapping[int, int] | None = None) -> int:
    """Peak live bytes of `order` under this module's cost model."""
    return _Model(sg, order, sizes, scratch or {}).peak(order)
