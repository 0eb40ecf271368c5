r"""The supervised stage: a denoising fine-tune of a diffusion model on real crops, before any RL.

RL improves what a reward prefers; it does not carry a model into a domain it does not draw (DDPO, DPOK and
Flow-GRPO all start from a model that already draws it).  This stage brings the model there: the standard
text-to-image fine-tune (as diffusers' ``train_text_to_image_lora.py``) on the images of a reference set with
their captions,

.. math::

    \min_\theta\ \mathbb E_{x_0, c, t, \epsilon}\, \big\| o_\theta(x_t, t, c) - y \big\|^2, \qquad
    x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon,

with the target :math:`y` of the scheduler's prediction type (:math:`\epsilon`; :math:`v = \sqrt{\bar\alpha_t}\epsilon
- \sqrt{1-\bar\alpha_t} x_0`; or :math:`x_0`), :math:`t` uniform over the training timesteps, the caption replaced by
``""`` with probability ``caption_dropout`` (classifier-free guidance keeps working), and :math:`x_0` the image (a
pixel-space model such as the embedded crater model) or its VAE latent :math:`s\,E(x)` (a Stable Diffusion layout;
latents are encoded once).  Only the UNet trains: LoRA adapters (``rank > 0``, the default) or all its weights
(``rank = 0``).  Augmentation keeps the physics: the north–south mirror only (the sun stays in the west; an
east–west flip or a rotation would move it).

:func:`finetune` writes a diffusers folder that ``natgrad-diffusion train --model`` accepts (the adapters merged
into the UNet's weights), ``supervised.json`` (settings, data, losses, time) and, while it runs, a checksummed
``supervised_state.pt`` every ``checkpoint_every`` steps, from which ``resume=True`` continues exactly.  The
training set of the real-Mars job is :func:`training_set` ``("mars")``: the multi-scale crater crops of the tile's
reference region (:mod:`natgrad_diffusion.data.craters.mars_regions`), never the validation or evaluation regions.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import SUPERVISED, SupervisedConfig
from ..core.integrity import seal, unseal
from ..core.logs import atomic_write_bytes, atomic_write_text, library_versions
from ..sampling.components import DiffusionComponents

__all__ = [
    "SUPERVISED_FILE",
    "SupervisedError",
    "SupervisedResult",
    "check_supervised_dir",
    "finetune",
    "is_supervised_dir",
    "model_images",
    "training_set",
]

SUPERVISED_FILE = "supervised.json"
STATE_FILE = "supervised_state.pt"
#: what a supervised folder holds (all of it written by :func:`finetune`; replacing removes only these)
_OWN = (SUPERVISED_FILE, STATE_FILE, "unet", "text_encoder", "tokenizer", "scheduler", "vae", "model_index.json",
        "crater_model.json", "loss.png")  # fmt: skip


class SupervisedError(ValueError):
    """A supervised fine-tune cannot start or continue (a folder that is not one, a damaged state, ...)."""




@dataclass
class SupervisedResult:
    """What :func:`finetune` returns: the model folder, the settings, the steps done, the loss of every step
    and the seconds spent training (this call)."""

    out: Path
    config: SupervisedConfig
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def training_set(source: str = "mars") -> Any:
    """The images and captions of the supervised stage: ``"mars"`` is the shipped multi-scale crater crops of the
    reference region; any other value is the path of a reference-set ``.npz``."""
    from ..data.craters.mars_regions import shipped_region_set
    from ..data.craters.reference import load_reference_set

    return shipped_region_set("crater_crops", "reference") if source == "mars" else load_reference_set(source)


def model_images(images: np.ndarray, components: DiffusionComponents) -> Tensor:
    """uint8 images → the model's training space ``(N, C, h, w)``: pixels in ``[-1, 1]`` at the model's size and
    channels (grayscale repeated to RGB when the model is RGB), or their VAE latents (mean, times the scaling
    factor), encoded once in batches of 16."""
    from ..evaluation.judges import as_judge_input

    channels, height, width = components.image_shape()
    a = np.asarray(images)
    x = torch.from_numpy(np.ascontiguousarray(a)).float().div(127.5).sub(1.0)
    x = x.permute(0, 3, 1, 2) if a.ndim == 4 else x.unsqueeze(1)
    if channels == 1 and x.shape[1] == 3:
        x = as_judge_input(a, height)
    elif channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    if components.vae is None:
        return x.contiguous()
    vae = components.vae
    with torch.no_grad():
        parts = [vae.encode(x[i : i + 16].to(vae.device, vae.dtype)).latent_dist.mean for i in range(0, len(x), 16)]
    return torch.cat(parts).float().cpu() * vae.config.scaling_factor


def is_supervised_dir(path: str | Path) -> bool:
    """``path`` holds a supervised model or a supervised stage in progress (written by :func:`finetune`)."""
    p = Path(path)
    return (p / SUPERVISED_FILE).is_file() or (p / STATE_FILE).is_file()


def check_supervised_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> str:
    """What :func:`finetune` will do with the folder ``out``: ``"new"`` (new or empty), ``"resume"`` (its state file,
    with ``resume``) or ``"replace"`` (a supervised model, with ``overwrite``); :class:`SupervisedError` otherwise
    (a file, a non-empty folder that holds no supervised model, a supervised model without either flag)."""
    out = Path(out)
    if not str(out).strip():
        raise SupervisedError("--out is empty: give a folder for the supervised model")
    if out.exists() and not out.is_dir():
        raise SupervisedError(f"{out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if not is_supervised_dir(out):
        raise SupervisedError(f"{out} is not empty and holds no supervised model: choose a new or empty folder")
    if resume and (out / STATE_FILE).is_file():
        return "resume"
    if overwrite:
        return "replace"
    raise SupervisedError(f"{out} already holds a supervised model; pass --resume to continue it or --overwrite to "
                          "replace it, or choose another folder")  # fmt: skip


def _clear(out: Path) -> None:
    """Remove what :func:`finetune` wrote in ``out`` (nothing else)."""
    for name in _OWN:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _add_adapters(components: DiffusionComponents, config: SupervisedConfig) -> list[Tensor]:
    """The trainable tensors: LoRA adapters (seeded) on the UNet, or all its weights."""
    unet = components.unet
    if config.rank == 0:
        unet.requires_grad_(True)
        return list(unet.parameters())
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, target_modules=list(config.lora_targets),
                                    init_lora_weights="gaussian"), adapter_name="supervised")  # fmt: skip
    unet.requires_grad_(False)
    params = [p for n, p in unet.named_parameters() if ".supervised." in n]
    for p in params:
        p.requires_grad_(True)
    return params


def _merge_adapters(components: DiffusionComponents) -> None:
    """Fold the LoRA adapters into the UNet's weights and remove them (a plain ``UNet2DConditionModel`` again)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = components.unet
    if not any(isinstance(m, BaseTunerLayer) for m in unet.modules()):
        return
    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    state = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    plain = type(unet).from_config(unet.config)
    plain.load_state_dict(state)
    if plain.device != unet.device or plain.dtype != unet.dtype:
        plain = plain.to(device=unet.device, dtype=unet.dtype)
    components.unet = plain.eval().requires_grad_(False)


def _target(components: DiffusionComponents, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    kind = components.scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return components.scheduler.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise SupervisedError(f"unknown prediction type {kind!r} of the scheduler")


class _Trainer:
    """The loop's state: data, trainable tensors, optimiser, generator, losses (what the state file saves)."""

    def __init__(self, components: DiffusionComponents, data: Any, config: SupervisedConfig) -> None:
        self.components, self.config = components, config
        self.x = model_images(data.images, components)
        captions = [str(c) for c in data.captions]
        unique = sorted(set(captions) | {""})
        embeds = components.encode_prompts(unique).embeds.detach().float().cpu()
        index = {c: i for i, c in enumerate(unique)}
        self.caption_index = torch.tensor([index[c] for c in captions])
        self.embeds, self.empty = embeds, index[""]
        self.params = _add_adapters(components, config)
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=1e-4)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.step, self.losses = 0, []
        self.ema = [p.detach().clone() for p in self.params]

    def train_step(self) -> float:
        c, gen, unet = self.config, self.gen, self.components.unet
        idx = torch.randint(0, len(self.x), (c.batch_size,), generator=gen)
        x0 = self.x[idx]
        flip = torch.rand(c.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(2), x0)  # north-south mirror: the sun stays west
        drop = torch.rand(c.batch_size, generator=gen) < c.caption_dropout
        cond = self.embeds[torch.where(drop, torch.full_like(idx, self.empty), self.caption_index[idx])]
        t = torch.randint(0, self.components.scheduler.config.num_train_timesteps, (c.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = self.components.scheduler.add_noise(x0, noise, t)
        device, dtype = unet.device, unet.dtype
        out = unet(xt.to(device, dtype), t.to(device), encoder_hidden_states=cond.to(device, dtype)).sample
        loss = F.mse_loss(out.float(), _target(self.components, x0, noise, t).to(out.device).float())
        for group in self.opt.param_groups:
            group["lr"] = c.lr * min(1.0, (self.step + 1) / max(1, c.warmup))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        decay = min(c.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - decay)
        self.step += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """The trainable tensors hold their moving average inside the block (the trained values after it)."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, trained)

    def state(self) -> dict[str, Any]:
        return {"version": 1, "config": asdict(self.config), "step": self.step, "losses": self.losses,
                "params": [p.detach().cpu().clone() for p in self.params], "optimizer": self.opt.state_dict(),
                "ema": [t.cpu().clone() for t in self.ema], "generator": self.gen.get_state()}  # fmt: skip

    def load(self, state: dict[str, Any], path: Path) -> None:
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in state.get("config", {}).items()}
        if saved != asdict(self.config):
            changed = sorted(k for k in saved if saved[k] != asdict(self.config).get(k))
            raise SupervisedError(f"cannot resume {path} with other settings ({', '.join(changed)} differ)")
        with torch.no_grad():
            for p, e, v, w in zip(self.params, self.ema, state["params"], state["ema"], strict=True):
                p.copy_(v)
                e.copy_(w)
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.step, self.losses = int(state["step"]), list(state["losses"])


def _read_state(path: Path) -> dict[str, Any]:
    payload, _ = unseal(path.read_bytes(), path)
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def _write_state(trainer: _Trainer, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(trainer.state(), buf)
    atomic_write_bytes(path, seal(buf.getvalue()))


def finetune(
    components: DiffusionComponents,
    data: Any,
    out: str | Path,
    config: SupervisedConfig = SUPERVISED,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    source: str = "",
    say: Callable[[str], None] = print,
    on_checkpoint: Callable[[int], None] | None = None,
) -> SupervisedResult:
    """Fine-tune ``components``' UNet on ``data`` (a :class:`~natgrad_diffusion.data.craters.reference.ReferenceSet`:
    uint8 images and captions) and write the model to ``out`` (see the module docstring).

    ``out`` must be new or empty, or hold a supervised model: ``resume`` continues its state file (the same
    settings), ``overwrite`` replaces it (only what this function wrote).  ``components`` is changed in place: on
    return its UNet is the fine-tuned one (adapters merged).  ``source``: where the model came from (recorded).
    ``on_checkpoint(step)`` is called every ``checkpoint_every`` steps with the UNet in eval mode, the adapters
    active and the weights' moving average in place (e.g. to evaluate the model at several step counts in one run).
    """
    out = Path(out)
    action = check_supervised_dir(out, resume=resume, overwrite=overwrite)
    if action == "replace":
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        trainer = _Trainer(components, data, config)
        if action == "resume":
            trainer.load(_read_state(out / STATE_FILE), out / STATE_FILE)
            say(f"resuming the supervised stage in {out} at step {trainer.step}")
        seconds = _loop(trainer, out, progress, on_checkpoint)
    finally:
        torch.set_num_threads(threads)
    _merge_adapters(components)
    _save(components, out, config, trainer.losses, source=source, data=data, seconds=seconds)
    (out / STATE_FILE).unlink(missing_ok=True)
    return SupervisedResult(out, config, trainer.step, list(trainer.losses), seconds)


def _loop(trainer: _Trainer, out: Path, progress: bool, on_checkpoint: Callable[[int], None] | None) -> float:
    from tqdm.auto import tqdm

    c = trainer.config
    start = time.perf_counter()
    trainer.components.unet.train()
    with tqdm(total=c.steps, initial=trainer.step, disable=not progress, desc="supervised", unit="step",
              dynamic_ncols=True) as bar:  # fmt: skip
        while trainer.step < c.steps:
            loss = trainer.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(trainer.losses[-25:]):.4f}", refresh=False)
            if trainer.step % c.checkpoint_every == 0 and trainer.step < c.steps:
                _write_state(trainer, out / STATE_FILE)
            if trainer.step % c.checkpoint_every == 0 and on_checkpoint is not None:
                trainer.components.unet.eval()
                with trainer.averaged():
                    on_checkpoint(trainer.step)
                trainer.components.unet.train()
            del loss
    trainer.components.unet.eval()
    with torch.no_grad():
        torch._foreach_copy_(trainer.params, trainer.ema)  # what is saved: the moving average
    return time.perf_counter() - start


def _save(components: DiffusionComponents, out: Path, config: SupervisedConfig, losses: list[float], *,
          source: str, data: Any, seconds: float) -> None:  # fmt: skip
    """The diffusers layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``vae/``) and
    ``supervised.json``."""
    components.save(out)
    crater = Path(source) / "crater_model.json" if source else None
    if crater is not None and crater.is_file():
        shutil.copyfile(crater, out / "crater_model.json")
    record = {
        "kind": "natgrad-diffusion supervised model",
        "source_model": source,
        "config": asdict(config),
        "data": {"n": len(data.images), "meta": {k: v for k, v in data.meta.items() if k != "split_geometry"}},
        "steps": len(losses),
        "final_loss": float(np.mean(losses[-25:])) if losses else None,
        "losses": [round(v, 6) for v in losses],
        "seconds": seconds,
        "threads": torch.get_num_threads() if config.threads is None else config.threads,
        "versions": library_versions(),
    }
    atomic_write_text(out / SUPERVISED_FILE, json.dumps(record, indent=1) + "\n")
