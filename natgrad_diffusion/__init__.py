"""natgrad_diffusion: diffusion models as policies for natgrad.

Sampling with a diffusers UNet as a sequence of Gaussian decisions (:mod:`~natgrad_diffusion.sampling`),
three policy modes (:mod:`~natgrad_diffusion.policies`), diversity rewards (:mod:`~natgrad_diffusion.rewards`),
TRPO / PPO agents (:mod:`~natgrad_diffusion.agents`), the crater data and embedded model
(:mod:`~natgrad_diffusion.craters`) and the training loop behind the ``natgrad-diffusion`` command
(:mod:`~natgrad_diffusion.training`).  See ``examples/crater_finetune.py``.
"""

from ._compat import hide_broken_torchvision

# transformers imports torchvision when it is installed; a torchvision built for another torch (PyPI's
# CUDA wheel next to a CPU torch) would take transformers, peft and diffusers' text encoders down with it
hide_broken_torchvision()

__version__ = "0.1.0"
