"""Stage 2: the agents (TRPO through natgrad, PPO), the chunked update, the critic, the episode log, checkpoints, the
checks of a run's settings, the run's set-up and the loop (:mod:`.loop`)."""

from ..moved import lazy_exports

# the names of the module this package replaced (natgrad_diffusion.training, before the pipeline subpackages)
__getattr__, __all__ = lazy_exports(__name__, {"loop": ['TrainResult', 'Trainer', 'load_policy_from_run', 'make_agent', 'run_prepared', 'train']})
