"""Mars-crater data and the embedded crater diffusion model.

* :mod:`natgrad_diffusion.data.craters.render`: procedural renderer of crater images with captions (shading, rendering,
  batches; re-exports the names of the four modules below).
* :mod:`natgrad_diffusion.data.craters.scene`: the parameters of a scene (craters, sun, texture) and their JSON form.
* :mod:`natgrad_diffusion.data.craters.terrain`: crater morphometry, radial profiles and the heightmap of a scene.
* :mod:`natgrad_diffusion.data.craters.captions`: the closed caption vocabulary, captions from true parameters, the parser.
* :mod:`natgrad_diffusion.data.craters.sampler`: random scenes drawn caption first, with a diversity knob.
* :mod:`natgrad_diffusion.data.craters.reference`: reference sets (generated, from a folder, from lunar patches), ``.npz`` I/O.
* :mod:`natgrad_diffusion.data.craters.model`: the tiny text-conditional pixel-space crater diffusion model.
* :mod:`natgrad_diffusion.data.craters.mars`: real Mars crater crops (pycda's labelled tile) in spatially disjoint splits.

The scripts that trained and evaluated the embedded model are in the repository's ``scripts/`` folder.
"""

from __future__ import annotations
