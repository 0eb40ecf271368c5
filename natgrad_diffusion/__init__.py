"""natgrad_diffusion: diffusion models as policies for natgrad (see the crater example)."""

__version__ = "0.1.0"
