"""Shared tiny pipelines for the natgrad_diffusion tests (random weights, built from configs in milliseconds)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a broken torchvision is hidden with a RuntimeWarning
    from natgrad_diffusion.sampling.components import DiffusionComponents, build_tiny_components

PROMPTS = ["a crater", "two craters"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny UNets gain nothing from threads, and a busy 2-core machine makes OpenMP barriers very slow."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def make_components(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., DiffusionComponents]:
    """``make_components(pixel_space=False, **kwargs)``: a fresh tiny stack (same weights for the same seed)."""
    tokenizer_dir = tmp_path_factory.mktemp("tokenizer")

    def make(**kwargs: object) -> DiffusionComponents:
        kwargs.setdefault("tokenizer_dir", tokenizer_dir)
        return build_tiny_components(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def components(make_components: Callable[..., DiffusionComponents]) -> DiffusionComponents:
    """A latent-space tiny stack (VAE with one downsampling: 8×8×4 latents, 16×16 images)."""
    return make_components()


@pytest.fixture
def pixel_components(make_components: Callable[..., DiffusionComponents]) -> DiffusionComponents:
    """A pixel-space tiny stack (no VAE, 8×8 RGB)."""
    return make_components(pixel_space=True)
