"""Evaluation by judges the reward never saw (:mod:`.judges`), the metrics table (:mod:`.metrics`), the baselines, the
verdict, the plots and a run's final evaluation.  It sits below the two stages: the supervised stage and the
training loop both call it."""

from ..moved import lazy_exports

# the names of the module this package replaced (natgrad_diffusion.evaluation, before the pipeline subpackages)
__getattr__, __all__ = lazy_exports(__name__, {"metrics": ['EVAL_METRICS', 'Spaces', 'batch_metrics', 'evaluate_policy', 'format_metrics_table', 'image_metrics', 'judge_metrics', 'lora_disabled', 'make_spaces', 'sample_images', 'table_columns']})
