"""The error every check of a job's settings and inputs raises: one line, naming what is wrong."""

__all__ = ["TrainingError"]


class TrainingError(ValueError):
    """A bad configuration or input (unknown mode, negative episodes, missing model or prompts, ...)."""
