"""Exceptions gemseg raises on purpose (besides ``ValueError``/``TypeError`` for bad input)."""


class WeightsUnavailableError(RuntimeError):
    """The requested model weights are neither cached locally nor downloadable."""
