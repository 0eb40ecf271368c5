"""natgrad_diffusion: diffusion models as policies for natgrad.

The folders are the pipeline; each imports only from the ones before it:

* :mod:`~natgrad_diffusion.core`: the settings (:mod:`~natgrad_diffusion.core.config`), errors, the run directory,
  file integrity, logs and processes;
* :mod:`~natgrad_diffusion.data`: the crater renderer, real Mars crops and the embedded model
  (:mod:`~natgrad_diffusion.data.craters`), the reference value decoded once from ``--reference``, the prompts;
* :mod:`~natgrad_diffusion.sampling`: loading a diffusers model, DDIM as a sequence of Gaussian decisions
  (:mod:`~natgrad_diffusion.sampling.ddim`) and the three policy modes (:mod:`~natgrad_diffusion.sampling.policies`);
* :mod:`~natgrad_diffusion.rewards`: feature spaces and the diversity / reference-match rewards;
* :mod:`~natgrad_diffusion.evaluation`: judges the reward never saw, the metrics table, baselines, verdict, plots;
* :mod:`~natgrad_diffusion.supervised` (stage 1) and :mod:`~natgrad_diffusion.training` (stage 2: TRPO / PPO agents,
  the chunked update, critic, checks, the loop behind ``natgrad-diffusion train``);
* :mod:`~natgrad_diffusion.recipe`: both stages, judged; :mod:`~natgrad_diffusion.cli`: the command line.

See ``examples/crater_finetune.py``.  The flat layout's paths still import for one release
(:mod:`~natgrad_diffusion.moved`).
"""

from ._compat import hide_broken_torchvision
from .moved import install as _install_old_paths

# transformers imports torchvision when it is installed; a torchvision built for another torch (PyPI's
# CUDA wheel next to a CPU torch) would take transformers, peft and diffusers' text encoders down with it
hide_broken_torchvision()
_install_old_paths()  # the flat layout's import paths, for one release (natgrad_diffusion.moved)

__version__ = "0.1.0"
