"""Graph -> MemoryPlan: lifetimes, aliasing, offsets, execution order, budget. Pure Python."""

from edgert.plan.aliasing import Alias, Aliasing
from edgert.plan.offsets import Interval, Solution, solve
from edgert.plan.plan import (MemoryPlan, Placement, ScratchPlacement, format_size, parse_size, plan,
                              validate)

__all__ = [
    "Alias", "Aliasing", "Interval", "MemoryPlan", "Placement", "ScratchPlacement", "Solution",
    "format_size", "parse_size", "plan", "solve", "validate",
]
