"""edgert: an inference runtime daemon for edge boards (TFLite models, one planned arena, numba kernels)."""

__version__ = "0.1.0"
