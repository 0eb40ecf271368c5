"""The before/after evaluation of a run: the rows of ``evaluation.md`` / ``evaluation.json`` and their image grids.

:class:`RunEvaluation` samples the evaluation prompts (fixed seeds) with the pretrained model, the baselines
(:mod:`natgrad_diffusion.evaluation.baselines`: the reference's brightness and contrast, the best fixed prompt chosen on the
validation split) and the initial policy *before* training, and with the fine-tuned policy *after*; each row holds
:func:`~natgrad_diffusion.evaluation.metrics.image_metrics` in every evaluation space.  A resumed run reuses the rows saved
before training.  Rank 0 only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import PolicyMode, TrainingConfig
from ..core.errors import TrainingError
from ..core.logs import atomic_write_text
from ..core.rundir import COMPARISON_IMAGE, EVALUATION_FILE, eval_image
from ..data.references import ReferenceData
from ..sampling.policies import DiffusionPolicy
from .baselines import best_fixed_prompt, brightness_contrast_map
from .metrics import Spaces, evaluate_policy, format_metrics_table, image_metrics, sample_images, table_columns
from .plots import save_comparison_grid, save_image_grid

__all__ = ["RunEvaluation"]


class RunEvaluation:
    """The evaluation rows of one run, written to ``run_dir``.

    Attributes:
        rows: ``{row name: metrics}`` (``"pretrained"``, the baselines, ``"initial policy"``, ``"fine-tuned"``).
        images: the uint8 images of each row sampled in this process.
        best_prompt: the baseline's best fixed prompt (``None`` until evaluated).
    """

    def __init__(
        self,
        config: TrainingConfig,
        run_dir: Path,
        components: Any,
        spaces: Spaces,
        data: ReferenceData,
        *,
        train_prompts: Sequence[str],
        eval_prompts: Sequence[str],
        reward_extractor: Callable[[np.ndarray], np.ndarray],
        reference_info: dict[str, Any],
    ) -> None:
        self.config, self.run_dir, self.components, self.spaces, self.data = config, run_dir, components, spaces, data
        self.train_prompts, self.eval_prompts = list(train_prompts), list(eval_prompts)
        self.extractor, self.reference_info = reward_extractor, reference_info
        self.rows: dict[str, dict[str, float]] = {}
        self.images: dict[str, np.ndarray] = {}
        self.best_prompt: str | None = None

    @property
    def json_path(self) -> Path:
        return self.run_dir / f"{EVALUATION_FILE}.json"

    def before(self, policy: DiffusionPolicy, *, resumed: bool, say: Callable[[str], None]) -> None:
        """The pretrained model, the baselines and the initial policy (the rows saved before a resume, if any)."""
        if resumed and self.json_path.exists():
            self.rows = {k: v for k, v in self._saved().items() if k != "fine-tuned"}
            return
        say("evaluating the pretrained model, the baselines and the initial policy ...")
        pretrained = self._row("pretrained", policy, pretrained=True)
        if self.config.eval_baselines:
            self._baseline_rows(policy, pretrained)
        self._row("initial policy", policy, pretrained=False)
        atomic_write_text(self.json_path, json.dumps(self.rows, indent=2) + "\n")

    def after(self, policy: DiffusionPolicy, *, say: Callable[[str], None]) -> None:
        """The fine-tuned policy; writes ``evaluation.json``, ``evaluation.md`` and the real | pretrained |
        fine-tuned grid."""
        say("evaluating the fine-tuned policy ...")
        self._row("fine-tuned", policy, pretrained=False)
        self._write_comparison()
        atomic_write_text(self.json_path, json.dumps(self.rows, indent=2) + "\n")
        atomic_write_text(self.run_dir / f"{EVALUATION_FILE}.md", self.text())

    def text(self) -> str:
        """``evaluation.md``: what was compared with what, and the table."""
        c, sp, ref = self.config, self.spaces, self.reference_info
        held_out = (f"{len(sp.reference_images)} held-out images" if sp.reference_images is not None
                    else "the held-out images of the reward's reference")  # fmt: skip
        lines = [
            f"Held-out evaluation: {len(self.eval_prompts)} prompts × {c.eval_images_per_prompt} images, {c.steps} "
            f"steps, against {held_out} ({c.eval_reference or c.reference or 'render'}, evaluation split).",
            f"The reward ({c.reward}) used the **{sp.reward_space}** space (marked *) and the reference "
            f"{ref.get('source')} ({ref.get('split', 'reference')} split); the other spaces are ones it never saw.",
        ]
        if "initial policy" in self.rows and PolicyMode.parse(c.mode) is PolicyMode.LORA_UNET:
            lines.append("The initial policy is the pretrained model itself (LoRA's B matrices start at zero), so "
                         "its row repeats the pretrained row.")  # fmt: skip
        lines.append("")
        return "\n".join(lines) + format_metrics_table(self.rows, columns=table_columns(sp)) + "\n"

    def _row(self, name: str, policy: DiffusionPolicy, *, pretrained: bool, **kwargs: Any) -> np.ndarray:
        per = self.config.eval_images_per_prompt
        metrics, images = evaluate_policy(
            self.components, policy, self.eval_prompts, self.spaces, self.config, pretrained=pretrained, **kwargs
        )
        self.rows[name] = metrics
        labels = self.eval_prompts[: len(images) // per]
        save_image_grid(images, self.run_dir / eval_image(name), ncols=per, row_labels=labels, scale=3)
        self.images[name] = images
        return images

    def _baseline_rows(self, policy: DiffusionPolicy, pretrained_images: np.ndarray) -> None:
        """The pretrained images mapped to the reference's brightness and contrast; the pretrained model with the
        best fixed training prompt, chosen on the validation split."""
        c = self.config
        reference_images = self.data.images("reference")
        if reference_images is not None and self.spaces.reference_images is not None:
            groups = [p for p in self.eval_prompts for _ in range(c.eval_images_per_prompt)]
            mapped = brightness_contrast_map(pretrained_images, reference_images.images)
            self.rows["pretrained + brightness/contrast map"] = image_metrics(
                mapped, groups, self.spaces, c.vendi_kernel
            )
        validation = self.data.images("validation")
        if validation is None:
            return

        def sample_with(prompts: list[str]) -> np.ndarray:
            return sample_images(
                self.components, prompts, images_per_prompt=c.eval_images_per_prompt, steps=c.steps,
                guidance_scale=c.guidance_scale, eta=c.eta, seed=c.eval_seed + 7919,  # type: ignore[arg-type]
            )[0]  # fmt: skip

        best, _ = best_fixed_prompt(sample_with, self.train_prompts, self.extractor, self.extractor(validation.images))
        self.best_prompt = best
        self._row(
            "pretrained, best fixed prompt", policy, pretrained=True, sample_prompts=[best] * len(self.eval_prompts)
        )

    def _saved(self) -> dict[str, Any]:
        try:
            saved = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            saved = None
        if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
            raise TrainingError(
                f"{self.json_path} is damaged (not the evaluation table of a run): delete it to evaluate again"
            )
        return saved

    def _write_comparison(self) -> None:
        blocks = {"real (held out)": self.spaces.reference_images} if self.spaces.reference_images is not None else {}
        if "pretrained" in self.images:
            blocks["pretrained"] = self.images["pretrained"]
        blocks["fine-tuned"] = self.images["fine-tuned"]
        save_comparison_grid(
            blocks, self.eval_prompts, self.config.eval_images_per_prompt, self.run_dir / COMPARISON_IMAGE
        )
