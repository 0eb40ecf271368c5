"""Mars-crater data and the embedded crater diffusion model.

* :mod:`natgrad_diffusion.craters.render`: procedural renderer of crater images with captions.
* :mod:`natgrad_diffusion.craters.reference`: reference sets (generated, from a folder, from lunar patches), ``.npz`` I/O.
* :mod:`natgrad_diffusion.craters.model`: the tiny text-conditional pixel-space crater diffusion model.
* :mod:`natgrad_diffusion.craters.mars`: real Mars crater crops (pycda's labelled tile) in spatially disjoint splits.

The scripts that trained and evaluated the embedded model are in the repository's ``scripts/`` folder.
"""

from __future__ import annotations
