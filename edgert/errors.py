"""The exception tree: every error edgert raises on purpose is an EdgeRTError."""


class EdgeRTError(Exception):
    """Base of every error edgert raises deliberately."""


class ModelError(EdgeRTError):
    """A .tflite file is missing, corrupt, or violates the schema."""


class UnsupportedOpError(EdgeRTError):
    """An operator (op, version, dtype) that edgert has no kernel for; raised at load time."""


class PlanError(EdgeRTError):
    """The memory planner could not produce a valid plan."""


class BudgetExceeded(PlanError):
    """The plan needs more bytes than the configured budget."""

    def __init__(self, message: str, *, needed: int, lower_bound: int, budget: int, hints: tuple[str, ...] = ()):
        super().__init__(message)
        self.needed = needed
        self.lower_bound = lower_bound
        self.budget = budget
        self.hints = hints


class RequestError(EdgeRTError):
    """A request (local or over the wire) is malformed: wrong model, shape, dtype, size."""

    def __init__(self, message: str, *, kind: str = "bad_request"):
        super().__init__(message)
        self.kind = kind


class ConfigError(EdgeRTError):
    """A config file has an unknown key, a bad value, or names a missing file."""
