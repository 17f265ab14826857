"""Resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE) and CALL_ONCE: state kept between requests.

A variable's storage is the persistent-region bytes the planner gave its VAR_HANDLE output (sized
for the largest value read from or assigned to it), so the handle tensor's array *is* the
variable: a 1-D uint8 view. Reading and assigning are copies between that storage and an
activation. CALL_ONCE's init subgraph is run by the executor at load and on reset_state, so the
per-request op has nothing left to do.
"""

from __future__ import annotations

import numpy as np

from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext


def _nothing() -> None:
    return None


def _bind_nothing(ctx: OpContext, ins: list, outs: list, scratch) -> tuple:
    return _nothing, ()


def _is_handle(t) -> bool:
    return t is not None and t.type_name == "RESOURCE"


def _supports_read(ctx: OpContext) -> str | None:
    if len(ctx.inputs) != 1 or not _is_handle(ctx.inputs[0]) or len(ctx.outputs) != 1:
        return "READ_VARIABLE takes one resource handle and gives one tensor"
    return None


def _supports_assign(ctx: OpContext) -> str | None:
    if len(ctx.inputs) != 2 or not _is_handle(ctx.inputs[0]) or ctx.inputs[1] is None:
        return "ASSIGN_VARIABLE takes a resource handle and a value"
    return None


def _typed(storage: np.ndarray, like: np.ndarray, what: str) -> np.ndarray:
    if storage.nbytes < like.nbytes:
        raise ValueError(f"{what}: variable storage of {storage.nbytes} bytes cannot hold {like.nbytes}")
    return storage[:like.nbytes].view(like.dtype).reshape(like.shape)


def _bind_read(ctx: OpContext, ins: list, outs: list, scratch) -> tuple:
    src = _typed(ins[0], outs[0], f"READ_VARIABLE {ctx.outputs[0].name!r}")
    return np.copyto, (outs[0], src)


def _bind_assign(ctx: OpContext, ins: list, outs: list, scratch) -> tuple:
    value = ins[1]
    dst = _typed(ins[0], value, f"ASSIGN_VARIABLE {ctx.inputs[1].name!r}")
    return np.copyto, (dst, value)


def register(registry: KernelRegistry) -> None:
    registry.add(KernelEntry("VAR_HANDLE", supports=lambda ctx: None, bind=_bind_nothing))
    registry.add(KernelEntry("CALL_ONCE", supports=lambda ctx: None, bind=_bind_nothing))
    registry.add(KernelEntry("READ_VARIABLE", supports=_supports_read, bind=_bind_read, strided_output=True))
    registry.add(KernelEntry("ASSIGN_VARIABLE", supports=_supports_assign, bind=_bind_assign))
