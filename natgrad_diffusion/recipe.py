"""The two-stage recipe of the crater job: a supervised stage on real crops, then TRPO, judged by what neither saw.

1. **Supervised** (:mod:`natgrad_diffusion.supervised.stage`): the pretrained model fine-tuned on the multi-scale real
   crater crops of the tile's reference region → ``OUT/supervised`` (a diffusers folder).
2. **RL** (:func:`natgrad_diffusion.training.loop.train`): TRPO with the distribution-matching and diversity reward,
   starting from the supervised weights → ``OUT/rl``.  What it is for: more coverage of the real distribution and
   more variety within a caption, at no cost in fidelity and no increase in memorisation.  With
   ``rl_from_pretrained`` the same RL stage also runs from the pretrained model (today's recipe) → ``OUT/rl_pretrained``.
3. **Judgement** (:func:`judge_rows`): every row samples the same captions with the same seeds, ``n`` images (the
   size of the real validation row), and is judged against the held-out evaluation split in every space and by
   every judge of :func:`~natgrad_diffusion.evaluation.metrics.image_metrics`: real validation crops (the ceiling),
   pretrained, pretrained + brightness/contrast map, the best fixed prompt, supervised, supervised + TRPO (and
   pretrained + TRPO).  ``OUT/evaluation.{md,json}``, ``OUT/eval_comparison.png`` (real | pretrained | supervised |
   supervised + TRPO).

:func:`run_recipe` runs the three; ``resume`` continues the stages where they stopped (a finished stage is reused).
``OUT`` is recognised by its ``recipe.json``; a non-empty folder without one is refused.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .core.config import SUPERVISED, TRAINING, SupervisedConfig, TrainingConfig, config_dict
from .supervised.stage import SUPERVISED_FILE

__all__ = [
    "RECIPE_FILE",
    "RecipeConfig",
    "RecipeError",
    "RecipeJudge",
    "RecipeResult",
    "judge_rows",
    "recipe_columns",
    "run_recipe",
    "with_test_mode",
]

RECIPE_FILE = "recipe.json"
_STAGES = ("supervised", "rl", "rl_pretrained")
_OWN_FILES = (RECIPE_FILE, "evaluation.json", "evaluation.md", "eval_comparison.png")


class RecipeError(ValueError):
    """The recipe cannot start (a folder that is not one of its runs, ...)."""


@dataclass(frozen=True)
class RecipeConfig:
    """The two-stage job.

    Attributes:
        out: the job's folder (``supervised/``, ``rl/``, ``evaluation.md``, ...).
        supervised: the supervised stage (its seed is ``rl.seed``).
        rl: the RL stage, a :class:`~natgrad_diffusion.core.config.TrainingConfig` whose ``model`` is the pretrained
            model both stages start from (``out`` and ``evaluate`` are set by the recipe).
        rl_from_pretrained: also run the RL stage from the pretrained model (the row "pretrained + TRPO").
        eval_n: images per row (``None``: as many as the real validation crops).
    """

    out: str = "runs/crater_recipe"
    supervised: SupervisedConfig = SUPERVISED
    rl: TrainingConfig = field(default_factory=lambda: replace(TRAINING, episodes=30))
    rl_from_pretrained: bool = False
    eval_n: int | None = None


def with_test_mode(config: RecipeConfig) -> RecipeConfig:
    """``config`` as a smoke run of about a minute: 8 supervised steps of 8 images, the RL stage's test mode
    (:data:`~natgrad_diffusion.core.config.TEST_MODE`), 8 images per row."""
    supervised = replace(config.supervised, steps=8, batch_size=8, checkpoint_every=4)
    return replace(config, supervised=supervised, rl=replace(config.rl, test_mode=True), eval_n=8)


@dataclass
class RecipeResult:
    """What :func:`run_recipe` returns: the rows (``{row: metrics}``), the table's columns, the folder and the
    seconds of each stage."""

    out: Path
    config: RecipeConfig
    rows: dict[str, dict[str, float]]
    columns: list[tuple[str, str]]
    seconds: dict[str, float]
    best_prompt: str | None = None
    n: int = 0


def _claim(out: Path, *, resume: bool, overwrite: bool) -> None:
    if not str(out).strip():
        raise RecipeError("--out is empty: give a folder")
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / RECIPE_FILE).is_file():
        raise RecipeError(f"{out} is not empty and not a run directory of the two-stage job (no {RECIPE_FILE}): "
                          "choose a new or empty folder")  # fmt: skip
    if resume:
        return
    if not overwrite:
        raise RecipeError(f"{out} already holds a run of the two-stage job; pass --resume to continue it or "
                          "--overwrite to replace it")  # fmt: skip
    for name in _STAGES:  # each stage folder holds only what its stage wrote (their own rules apply inside)
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in _OWN_FILES:
        (out / name).unlink(missing_ok=True)


def _restart(stage: Path, resume: bool, say: Callable[[str], None]) -> bool:
    """Whether an RL stage of a resumed job starts again: it was killed before its first checkpoint, so it holds a
    run with nothing to resume (the job owns the folder; only the run's own files are replaced)."""
    from .core.rundir import CHECKPOINT_FILE, is_run

    if resume and is_run(stage) and not (stage / CHECKPOINT_FILE).is_file():
        say(f"{stage} was stopped before its first checkpoint: starting that stage again")
        return True
    return False


def run_recipe(
    config: RecipeConfig = RecipeConfig(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> RecipeResult:
    """Run (or continue) the two-stage job of ``config``; see the module docstring."""
    import torch

    from .sampling.models import load_model
    from .supervised.stage import finetune, training_set
    from .training.checks import resolve_defaults, validate_config
    from .training.checks import with_test_mode as with_rl_test_mode
    from .training.loop import train

    rl = replace(config.rl, evaluate=False)
    validate_config(with_rl_test_mode(rl, _explicit(rl)))
    out = Path(config.out)
    _claim(out, resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / RECIPE_FILE).write_text(json.dumps({"kind": "natgrad-diffusion two-stage job", "supervised":
                                   asdict(config.supervised), "rl": config_dict(rl)}, indent=1) + "\n")  # fmt: skip
    seconds: dict[str, float] = {}
    sup_dir = out / "supervised"
    base = str(rl.model) if rl.model is not None else None
    start = time.perf_counter()
    if (sup_dir / SUPERVISED_FILE).is_file() and resume:
        say(f"stage 1: reusing the supervised model in {sup_dir}")
    else:
        say("stage 1: supervised fine-tune on the real crater crops of the reference region ...")
        from .sampling.models import DEFAULT_MODEL_DIR

        components = load_model(base)
        sup = replace(config.supervised, seed=rl.seed)
        finetune(components, training_set("mars"), sup_dir, sup, resume=resume, progress=progress,
                 source=str(base or DEFAULT_MODEL_DIR), say=say)  # fmt: skip
        del components
    seconds["supervised"] = time.perf_counter() - start
    start = time.perf_counter()
    say("stage 2: TRPO from the supervised model ...")
    explicit = _explicit(rl)
    result = train(replace(rl, model=str(sup_dir), out=str(out / "rl")), resume=resume, progress=progress, log=say,
                   explicit=explicit, overwrite=_restart(out / "rl", resume, say))  # fmt: skip
    seconds["rl"] = time.perf_counter() - start
    policies = {"supervised + TRPO": (result.components, result.policy)}
    if config.rl_from_pretrained:
        start = time.perf_counter()
        say("stage 2 again, from the pretrained model (today's recipe) ...")
        other = train(replace(rl, out=str(out / "rl_pretrained")), resume=resume, progress=progress, log=say,
                      explicit=explicit, overwrite=_restart(out / "rl_pretrained", resume, say))  # fmt: skip
        policies["pretrained + TRPO"] = (other.components, other.policy)
        seconds["rl_pretrained"] = time.perf_counter() - start
    start = time.perf_counter()
    say("judging every row on the evaluation split ...")
    threads = torch.get_num_threads()
    if rl.threads is not None:
        torch.set_num_threads(rl.threads)
    try:
        judged = resolve_defaults(with_rl_test_mode(rl, _explicit(rl)))
        rows, columns, best, images = judge_rows(judged, load_model(base), policies, config.eval_n)
    finally:
        torch.set_num_threads(threads)
    seconds["judge"] = time.perf_counter() - start
    _write(out, rows, columns, images, seconds)
    return RecipeResult(out, config, rows, columns, seconds, best, len(images["pretrained"]))


def _explicit(rl: TrainingConfig) -> list[str]:
    """The test-mode fields the user set: those that differ from the recipe's own RL defaults."""
    from .core.config import TEST_MODE

    default = RecipeConfig().rl
    return [k for k in TEST_MODE if getattr(rl, k) != getattr(default, k)]


class RecipeJudge:
    """The judgement of the recipe's rows: the evaluation split, its spaces and judges, and the rows' captions and
    seeds (``n`` images: the test prompts cycled, seeds ``config.eval_seed + i``).  ``split="validation"`` judges
    against the validation split with the validation prompts instead (to choose settings by, never to report).

    Attributes:
        spaces: the evaluation spaces (:func:`~natgrad_diffusion.evaluation.metrics.evaluation_spaces`).
        validation: the real validation crops (the ceiling row and the baselines' choice).
        prompts: the captions of the ``n`` images of every row.
        columns: the table's columns (:func:`recipe_columns`).
    """

    def __init__(
        self, config: TrainingConfig, image_shape: tuple[int, int, int], n: int | None = None, split: str = "evaluation"
    ) -> None:
        from .data.prompts import job_prompts
        from .data.references import ReferenceData
        from .evaluation.metrics import evaluation_spaces
        from .rewards.reference_features import feature_extractor, load_reference_features

        self.config = config
        self.extractor = feature_extractor(config)
        data = ReferenceData(config, image_shape)
        reward_reference, _, _ = load_reference_features(data, self.extractor)
        if split not in ("evaluation", "validation"):
            raise ValueError(f"split must be evaluation or validation, got {split!r}")
        self.spaces = evaluation_spaces(config, self.extractor, reward_reference, data, split)
        self.validation = data.images("validation")
        self.reference = data.images("reference")
        n = n or len(self.validation)
        tests = job_prompts(config, "test" if split == "evaluation" else "validation", data.sources)
        self.prompts = [tests[i % len(tests)] for i in range(n)]
        names = self.spaces.names
        self.columns = recipe_columns(names[0], names[1:])

    def sample(
        self, components: Any, policy: Any = None, prompts: list[str] | None = None, seed: int = 0
    ) -> np.ndarray:
        """uint8 images of ``prompts`` (default: the rows' captions), one each, seeds ``eval_seed + seed + i``."""
        from .evaluation.metrics import sample_images

        c = self.config
        return sample_images(components, prompts or self.prompts, policy=policy, images_per_prompt=1, steps=c.steps,
                             guidance_scale=c.guidance_scale, eta=c.eta, seed=c.eval_seed + seed)[0]  # type: ignore[arg-type]  # fmt: skip

    def judge(self, images: np.ndarray, captions: list[str] | None = None) -> dict[str, float]:
        """Every metric and judge of :func:`~natgrad_diffusion.evaluation.metrics.image_metrics` for one row."""
        from .evaluation.metrics import image_metrics

        return image_metrics(images, captions or self.prompts, self.spaces, self.config.vendi_kernel)


def judge_rows(
    config: TrainingConfig,
    pretrained: Any,
    policies: dict[str, tuple[Any, Any]],
    n: int | None = None,
) -> tuple[dict[str, dict[str, float]], list[tuple[str, str]], str | None, dict[str, np.ndarray]]:
    """The rows of the recipe's table (see the module docstring): ``(rows, columns, best fixed prompt, images)``.

    ``pretrained``: the components of the pretrained model; ``policies``: ``{row: (components, policy)}`` of the
    RL stages (a ``LORA_UNET`` policy's components carry its adapters; the row without them is ``"supervised"``
    for the first).  Every row has ``n`` images (default: the real validation crops'), captions and seeds of
    :class:`RecipeJudge`.
    """
    from .evaluation.baselines import best_fixed_prompt, brightness_contrast_map
    from .evaluation.metrics import lora_disabled
    from .supervised.stage import training_set

    judge = RecipeJudge(config, pretrained.image_shape(), n)
    n = len(judge.prompts)
    images: dict[str, np.ndarray] = {"real (validation region)": judge.validation.images[:n]}
    images["pretrained"] = judge.sample(pretrained)
    images["pretrained + brightness/contrast map"] = brightness_contrast_map(images["pretrained"],
                                                                            judge.reference.images)  # fmt: skip
    candidates = list(dict.fromkeys(training_set("mars").captions))
    best, _ = best_fixed_prompt(lambda ps: judge.sample(pretrained, prompts=ps * 8, seed=7919), candidates,
                                judge.extractor, judge.extractor(judge.validation.images))  # fmt: skip
    images["pretrained, best fixed prompt"] = judge.sample(pretrained, prompts=[best] * n)
    for name, (components, policy) in policies.items():
        if name == "supervised + TRPO":
            with lora_disabled(policy):
                images["supervised"] = judge.sample(components)
        images[name] = judge.sample(components, policy)
    captions = {"real (validation region)": list(judge.validation.captions[:n])}
    rows = {name: judge.judge(x, captions.get(name)) for name, x in images.items()}
    return rows, judge.columns, best, images


def recipe_columns(reward_space: str, unseen: list[str]) -> list[tuple[str, str]]:
    """The recipe table's columns: the two-sample test; MMD² in the reward's space (marked ``*``) and every unseen
    space; precision, recall, density and coverage in the unseen spaces but the last (ResNet-18 and pixels by
    default); within-caption Vendi in the reward's space and the first unseen one; the grain ratio; crater
    presence, caption fidelity and memorisation."""
    cols = [("two_sample", "two-sample acc. ↓"), (f"{reward_space}/mmd2", f"MMD² {reward_space}* ↓")]
    cols += [(f"{s}/mmd2", f"MMD² {s} ↓") for s in unseen]
    for s in unseen[:-1] if len(unseen) > 1 else unseen:
        cols += [(f"{s}/precision", f"precision {s} ↑"), (f"{s}/recall", f"recall {s} ↑"),
                 (f"{s}/density", f"density {s}"), (f"{s}/coverage", f"coverage {s} ↑")]  # fmt: skip
    cols += [(f"{reward_space}/vendi_within_prompt", f"Vendi within caption {reward_space}* ↑")]
    cols += [(f"{s}/vendi_within_prompt", f"Vendi within caption {s} ↑") for s in unseen[:1]]
    cols += [("grain_ratio", "grain ratio (1 = real)"), ("crater_present", "crater present ↑"),
             ("caption_fidelity", "caption fidelity ↑"), ("memorisation", "memorisation ↓")]  # fmt: skip
    return cols


def _write(out: Path, rows: dict[str, dict[str, float]], columns: list[tuple[str, str]],
           images: dict[str, np.ndarray], seconds: dict[str, float]) -> None:  # fmt: skip
    from .core.logs import atomic_write_text
    from .evaluation.metrics import format_metrics_table
    from .evaluation.plots import save_comparison_grid

    atomic_write_text(out / "evaluation.json", json.dumps({"rows": rows, "seconds": seconds}, indent=1) + "\n")
    atomic_write_text(out / "evaluation.md", format_metrics_table(rows, columns=columns) + "\n")
    blocks = {k: images[k] for k in ("real (validation region)", "pretrained", "supervised", "supervised + TRPO")
              if k in images}  # fmt: skip
    per = 6
    labels = ["" for _ in range(min(6, len(next(iter(blocks.values()))) // per))]
    save_comparison_grid(blocks, labels, per, out / "eval_comparison.png", scale=2)
