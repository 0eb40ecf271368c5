"""Mars-crater data and the embedded crater diffusion model.

* :mod:`natgrad_diffusion.craters.render`: procedural renderer of crater images with captions.
* :mod:`natgrad_diffusion.craters.reference`: reference sets (generated, from a folder, from lunar patches), ``.npz`` I/O.
* :mod:`natgrad_diffusion.craters.model`: the tiny text-conditional pixel-space crater diffusion model.
* :mod:`natgrad_diffusion.craters.train_model` / :mod:`~natgrad_diffusion.craters.evaluate_model`: its training
  and evaluation scripts.
"""

from __future__ import annotations

from natgrad_diffusion._compat import hide_broken_torchvision

# transformers/diffusers import torchvision when it is installed; a broken wheel would take them down
hide_broken_torchvision()
