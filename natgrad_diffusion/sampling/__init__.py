"""Sampling and policies: loading a diffusers model (:mod:`.components`, :mod:`.models`), DDIM with the log-probability
of each decision (:mod:`.ddim`), the :mod:`.trajectory` and the three policy modes (:mod:`.policies`)."""

from ..moved import lazy_exports

# the names of the module this package replaced (natgrad_diffusion.sampling, before the pipeline subpackages)
__getattr__, __all__ = lazy_exports(__name__, {"ddim": ['DDIMStep', 'SamplingBatch', 'SamplingControls', 'SamplingHook', 'ddim_step', 'default_timesteps', 'gaussian_log_prob', 'guided_noise_prediction', 'sample', 'step_distribution']})
