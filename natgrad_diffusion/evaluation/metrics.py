"""Before/after evaluation: sample fixed prompts and seeds, compute the metrics against the reference, tabulate.

:func:`evaluate_policy` samples ``eval_images_per_prompt`` images per evaluation prompt (seeds from ``eval_seed``)
with the pretrained model or a policy and computes :func:`natgrad_diffusion.rewards.evaluate_metrics`;
:func:`format_metrics_table` writes the rows as markdown; :func:`batch_metrics` are the cheap metrics logged per
training episode.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.config import TRAINING, TrainingConfig
from ..rewards import (
    evaluate_metrics,
    mean_pairwise_distance_within_prompt,
    mmd2_unbiased,
    precision_recall_density_coverage,
    vendi_score,
    within_prompt_vendi_score,
)
from ..rewards.feature_reward import images_uint8
from ..rewards.grain import grain_ratio
from ..sampling.ddim import sample
from ..sampling.policies import DiffusionPolicy, PolicyMode

if TYPE_CHECKING:
    from .judges import CraterJudges

__all__ = [
    "EVAL_METRICS",
    "Spaces",
    "batch_metrics",
    "evaluate_policy",
    "format_metrics_table",
    "image_metrics",
    "judge_metrics",
    "lora_disabled",
    "make_spaces",
    "sample_images",
    "table_columns",
]

#: metrics of the before/after table, in order, with their orientation
EVAL_METRICS = (
    ("mmd2", "MMD² ↓"),
    ("fid", "FID ↓"),
    ("vendi", "Vendi ↑"),
    ("vendi_within_prompt", "Vendi within prompt ↑"),
    ("pairwise_distance_within_prompt", "pairwise dist. within prompt ↑"),
    ("precision", "precision ↑"),
    ("recall", "recall ↑"),
    ("coverage", "coverage ↑"),
)


@dataclass
class Spaces:
    """The feature spaces of an evaluation and the held-out reference in each.

    Attributes:
        names: the spaces, the reward's first.
        extractors: ``name -> uint8 images -> (N, d) features``.
        reference: ``name ->`` the held-out reference's features ``(m, d)``.
        reference_images: the held-out reference images (uint8), for the grain statistic and the two-sample test.
        judges: the Mars crater judges (:func:`~natgrad_diffusion.evaluation.judges.crater_judges`: crater presence, caption
            fidelity, memorisation) when the reference is the real Mars crops, else ``None``.
    """

    names: list[str]
    extractors: dict[str, Callable[[np.ndarray], np.ndarray]]
    reference: dict[str, np.ndarray]
    reference_images: np.ndarray
    judges: CraterJudges | None = None

    @property
    def reward_space(self) -> str:
        return self.names[0]


#: the evaluation spaces' image sizes where they differ from the extractor's default (ResNet-18 at 64 px, as the
#: project's random-feature numbers have always been computed; 224 px costs 12× more on a CPU)
EVAL_IMAGE_SIZES: dict[str, dict[str, int]] = {"resnet18": {"image_size": 64}}


def make_spaces(
    reward_space: str, reward_extractor: Any, others: Sequence[str], reference_images: np.ndarray
) -> Spaces:
    """:class:`Spaces` of the reward's extractor and the named ``others`` (each at its default image size)."""
    from ..rewards.features import get_feature_extractor

    extractors = {reward_space: reward_extractor}
    for name in others:
        extractors[name] = get_feature_extractor(name, **EVAL_IMAGE_SIZES.get(name, {}))
    reference = {name: np.asarray(e(reference_images)) for name, e in extractors.items()}
    return Spaces([reward_space, *others], extractors, reference, np.asarray(reference_images))


def evaluation_spaces(
    config: TrainingConfig, extractor: Any, reward_reference: np.ndarray, data: Any, split: str = "evaluation"
) -> Spaces:
    """The reward's space and ``config.eval_features``, against the held-out ``split`` of ``data`` (the job's
    :class:`~natgrad_diffusion.data.references.ReferenceData`; ``"validation"`` to choose settings by, the
    ``"evaluation"`` split to report); the reward's space alone, against ``reward_reference`` (its features), when the
    reference is a features file.  The crater judges join when the reference and the held-out set are the real Mars
    splits."""
    if isinstance(data, tuple):  # the earlier form (config, extractor, reference, image_shape)
        from ..data.references import ReferenceData

        warnings.warn("evaluation_spaces(config, extractor, reference, image_shape) is deprecated: pass "
                      "ReferenceData(config, image_shape)", FutureWarning, stacklevel=2)  # fmt: skip
        data = ReferenceData(config, data)
    held_out = data.images(split)
    if held_out is None:
        return Spaces([config.features], {config.features: extractor}, {config.features: reward_reference}, None)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random-init evaluation extractor: the table header names its weights
        spaces = make_spaces(config.features, extractor, config.eval_features, held_out.images)
    if data.sources.real_mars:
        from .judges import crater_judges

        spaces.judges = crater_judges()
    return spaces


def image_metrics(
    images: np.ndarray, prompts: Sequence[str], spaces: Spaces, vendi_kernel: str = "rbf"
) -> dict[str, float]:
    """Every metric of :func:`~natgrad_diffusion.rewards.evaluate_metrics` in every space (keys
    ``"space/metric"``; FID in the reward's space only), the grain ratio to the reference (``grain_ratio``, 1 = as grainy as the reference) and
    the pixel mean / std (``pixel_mean``, ``pixel_std``, in ``[0, 255]``)."""
    codes = np.asarray(prompts)
    out: dict[str, float] = {}
    for name in spaces.names:
        metrics = evaluate_metrics(
            spaces.extractors[name](images),
            spaces.reference[name],
            codes,
            vendi_kernel=vendi_kernel,  # type: ignore[arg-type]
            fid=name == spaces.reward_space,
        )
        out.update({f"{name}/{key}": value for key, value in metrics.items()})
    out["grain_ratio"] = grain_ratio(images, spaces.reference_images)
    out["pixel_mean"], out["pixel_std"] = float(np.mean(images)), float(np.std(images))
    out.update(judge_metrics(images, prompts, spaces))
    return out


def judge_metrics(images: np.ndarray, prompts: Sequence[str], spaces: Spaces) -> dict[str, float]:
    """The judges of :mod:`natgrad_diffusion.evaluation.judges` (``nan`` where they cannot judge): ``two_sample`` (the
    classifier two-sample test's accuracy against the held-out reference images, 5 folds; ``two_sample_sd`` its
    fold SD; it needs 5 images per set) and, with the Mars judges, ``crater_present``, ``caption_fidelity`` and
    ``memorisation``."""
    from .judges import two_sample_accuracy

    out = dict.fromkeys(("two_sample", "two_sample_sd", "crater_present", "caption_fidelity", "memorisation"), math.nan)
    real = spaces.reference_images
    if real is not None and min(len(images), len(real)) >= 5:
        out["two_sample"], out["two_sample_sd"] = two_sample_accuracy(images, real)
    if spaces.judges is not None:
        out["crater_present"] = spaces.judges.crater_present_rate(images)
        out["caption_fidelity"] = spaces.judges.caption_fidelity(images, prompts)
        out["memorisation"] = spaces.judges.memorisation(images)
    return out


def table_columns(spaces: Spaces) -> list[tuple[str, str]]:
    """The columns of the before/after table: the two-sample test, MMD² and within-prompt Vendi in every space (the
    reward's marked ``*``), coverage and recall in every space, the grain ratio, and the Mars judges (crater
    present, caption fidelity, memorisation) when there are any."""
    star = {n: "*" if n == spaces.reward_space else "" for n in spaces.names}
    cols = [("two_sample", "two-sample acc. ↓")] if spaces.reference_images is not None else []
    cols += [(f"{n}/mmd2", f"MMD² {n}{star[n]} ↓") for n in spaces.names]
    cols += [(f"{n}/vendi_within_prompt", f"Vendi within prompt {n}{star[n]} ↑") for n in spaces.names]
    cols += [(f"{n}/coverage", f"coverage {n}{star[n]} ↑") for n in spaces.names]
    cols += [(f"{n}/recall", f"recall {n}{star[n]} ↑") for n in spaces.names if n != spaces.reward_space]
    cols += [("grain_ratio", "grain ratio (1 = reference)")]
    if spaces.judges is not None:
        cols += [("crater_present", "crater present ↑"), ("caption_fidelity", "caption fidelity ↑"),
                 ("memorisation", "memorisation ↓")]  # fmt: skip
    return cols


def sample_images(
    components: Any,
    prompts: Sequence[str],
    *,
    policy: DiffusionPolicy | None = None,
    images_per_prompt: int = TRAINING.eval_images_per_prompt,
    steps: int = TRAINING.steps,
    guidance_scale: float = TRAINING.guidance_scale,
    eta: float = 0.0,
    seed: int = TRAINING.eval_seed,
    batch_prompts: int = 8,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """uint8 images (``(N, H, W)`` grayscale or ``(N, H, W, 3)``) and their prompts, prompt-major.

    ``policy=None`` samples the model as it is (for ``LORA_UNET`` the UNet carries the adapters).  Image ``i``
    uses seed ``seed + i`` whatever ``batch_prompts`` is.  ``progress``: a progress bar over the prompts.
    """
    from tqdm.auto import tqdm

    out, out_prompts = [], []
    prompts = list(prompts)
    hook = policy if policy is not None and policy.mode is not PolicyMode.LORA_UNET else None
    bar = tqdm(total=len(prompts), disable=not progress, desc="sampling", unit="prompt", leave=False)
    for start in range(0, len(prompts), batch_prompts):
        traj = sample(
            components,
            prompts[start : start + batch_prompts],
            num_images_per_prompt=images_per_prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            eta=eta,
            seed=seed + start * images_per_prompt,
            hook=hook,
            record_pred_original=False,
        )
        out.append(images_uint8(traj.images_float()))
        out_prompts += traj.image_prompts
        bar.update(len(prompts[start : start + batch_prompts]))
    bar.close()
    return np.concatenate(out), out_prompts


@contextmanager
def lora_disabled(policy: DiffusionPolicy | None) -> Iterator[None]:
    """Sample the pretrained UNet although it carries the LoRA adapters of a ``LORA_UNET`` policy."""
    if policy is None or policy.mode is not PolicyMode.LORA_UNET:
        yield
        return
    unet = policy.unet  # type: ignore[attr-defined]
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


def evaluate_policy(
    components: Any,
    policy: DiffusionPolicy | None,
    prompts: Sequence[str],
    spaces: Spaces,
    config: TrainingConfig = TRAINING,
    *,
    pretrained: bool = False,
    sample_prompts: Sequence[str] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Sample ``config.eval_images_per_prompt`` images per prompt (seeds from ``config.eval_seed``) with ``policy``
    and compute :func:`image_metrics` in ``spaces``; returns ``(metrics, images)``.

    ``pretrained=True`` (or ``policy=None``) samples the pretrained model instead: no sampling hook, and the LoRA
    adapters of a ``LORA_UNET`` policy disabled.  ``sample_prompts`` replaces the prompts the images are sampled
    with (one per entry of ``prompts``, same seeds; the within-prompt metrics still group by ``prompts``);
    ``transform`` post-processes the uint8 images (a baseline's brightness map).
    """
    with lora_disabled(policy if pretrained else None):
        images, _ = sample_images(
            components,
            list(sample_prompts) if sample_prompts is not None else prompts,
            policy=None if pretrained else policy,
            images_per_prompt=config.eval_images_per_prompt,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            eta=config.eta,  # type: ignore[arg-type]
            seed=config.eval_seed,
        )
    if transform is not None:
        images = transform(images)
    groups = [p for p in prompts for _ in range(config.eval_images_per_prompt)]
    return image_metrics(images, groups, spaces, config.vendi_kernel), images


def _cell(value: float, spread: float | None) -> str:
    text = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 or math.isnan(value) else f"{value:.2e}"
    if spread is not None:
        s = spread
        text += f" ± {s:.2g}" if abs(s) >= 1e-3 or s == 0 or math.isnan(s) else f" ± {s:.1e}"
    return text


def format_metrics_table(
    rows: dict[str, dict[str, float]],
    *,
    std: dict[str, dict[str, float]] | None = None,
    columns: Sequence[tuple[str, str]] = EVAL_METRICS,
) -> str:
    """A markdown table: one row per entry of ``rows`` (e.g. ``pretrained``, ``fine-tuned``), one column per
    ``(key, label)`` of ``columns`` (default :data:`EVAL_METRICS`); with ``std``, cells read ``mean ± std``."""
    header = "| | " + " | ".join(label for _, label in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for name, row in rows.items():
        spreads = std.get(name) if std is not None else None
        cells = [
            _cell(row.get(key, math.nan), None if spreads is None else spreads.get(key, math.nan)) for key, _ in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batch_metrics(
    feats: np.ndarray, prompts: list[str], reference: np.ndarray, bandwidth: float, kernel: Any
) -> dict[str, Any]:
    """Cheap metrics of an episode's (gathered) batch; FID is left to the evaluation (a 512-d matrix square root
    per episode costs seconds on a CPU and means little at batch sizes of tens)."""
    codes = np.asarray(prompts)
    n = feats.shape[0]
    return {
        "mmd2": mmd2_unbiased(feats, reference, bandwidth=bandwidth),
        "vendi": vendi_score(feats, kernel=kernel, bandwidth=bandwidth),
        "vendi_within_prompt": within_prompt_vendi_score(feats, codes, kernel=kernel, bandwidth=bandwidth),
        "pairwise_distance_within_prompt": mean_pairwise_distance_within_prompt(feats, codes),
        "coverage": precision_recall_density_coverage(reference, feats, k=5)["coverage"] if n > 5 else None,
    }
