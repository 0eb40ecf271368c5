"""One error class for a job's bad settings and inputs, the same wherever it is imported from."""

from natgrad_diffusion.core.errors import TrainingError


def test_one_class_a_value_error_re_exported_by_the_job():
    from natgrad_diffusion.core.errors import TrainingError as FromJob

    assert FromJob is TrainingError and issubclass(TrainingError, ValueError)
