"""``natgrad-diffusion``: train, sample, evaluate, build reference sets and features, plot runs.

::

    natgrad-diffusion train [--config FILE] [--mode DIVERSITY_POLICY] [--algorithm trpo] [--reward MMD]
                            [--episodes N] [--batch-size B] [--steps T] [--seed S] [--out DIR] [--model DIR|HUB_ID]
                            [--resume] [--test-mode] ...
    natgrad-diffusion sample --run DIR [--prompt TEXT ...] [--out grid.png]
    natgrad-diffusion evaluate --run DIR            # metrics table: pretrained vs fine-tuned
    natgrad-diffusion build-reference OUT.npz [--n 512 --size 32 --diversity broad]
    natgrad-diffusion build-reference --source mars OUT_DIR [--crop-factor 2.5 --min-diameter 12 --seed 0]
    natgrad-diffusion build-features REF.npz OUT.npz [--image-size 64]
    natgrad-diffusion plot --run DIR

Every ``train`` option is a field of :class:`natgrad_diffusion.config.TrainingConfig`, whose defaults are the
defaults here.  Precedence: defaults < config file (``--config``, JSON or TOML, field names as keys) < the saved
configuration of the run (``--resume``) < ``--test-mode`` < flags given on the command line.

Bad values give a one-line ``natgrad-diffusion: error: ...`` and exit status 2 (``--debug`` shows tracebacks).
Under ``torchrun --nproc-per-node K -m natgrad_diffusion train ...`` the job runs on ``K`` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NoReturn

from .config import TRAINING, TrainingConfig

__all__ = ["build_parser", "load_config_file", "main", "training_config"]

PROG = "natgrad-diffusion"

_HELP = {
    "mode": "policy mode: DIVERSITY_POLICY (conditioning + noise offsets), SCHEDULER_POLICY (guidance, eta, spacing)"
    " or LORA_UNET (LoRA on the UNet)",
    "algorithm": "trpo or ppo",
    "reward": "MMD, MI, FID, MMD_MI, VENDI or MMD_VENDI (MMD to the reference + within-prompt Vendi)",
    "reward_options": "reward keyword arguments as JSON, e.g. '{\"w_mi\": 0.5}'",
    "policy_options": "policy keyword arguments as JSON, e.g. '{\"noise_scale\": 7}' (merged over the mode's crater defaults)",
    "episodes": "policy updates (each samples --batch-size images per process)",
    "batch_size": "images per episode per process (a multiple of --images-per-prompt)",
    "images_per_prompt": "images per prompt in a batch",
    "steps": "DDIM denoising steps",
    "guidance_scale": "classifier-free guidance weight",
    "eta": "DDIM eta (default: 0, or 1 for LORA_UNET)",
    "seed": "seed of the initialisation and of every sampling seed",
    "model": "diffusers-layout directory or hub id (default: the embedded crater model)",
    "out": "run directory",
    "prompts": "training prompts file, one per line (default: the embedded crater prompts)",
    "eval_prompts": "evaluation prompts file (default: the embedded crater test prompts)",
    "reference": "reference set .npz (build-reference) or features .npz (build-features); default: render craters",
    "reference_n": "craters to render when no --reference is given",
    "reference_seed": "seed of the rendered reference",
    "reference_diversity": "diversity of the rendered reference (narrow, medium, broad or a number in [0, 1])",
    "features": "feature extractor: resnet18 or clip",
    "feature_image_size": "images are resized to this size for the feature extractor",
    "feature_weights": "feature-extractor weights (hub id or directory; default $NATGRAD_RESNET18 / local cache)",
    "vendi_kernel": "kernel of the logged / evaluated Vendi scores: rbf or cosine",
    "critic": "fit a value critic (--no-critic: per-prompt normalised rewards)",
    "max_kl": "TRPO trust-region radius (mean KL per decision)",
    "ppo_lr": "PPO learning rate",
    "checkpoint_every": "checkpoint every N episodes",
    "grid_every": "training image grid every N episodes",
    "evaluate": "before/after evaluation on the eval prompts (--no-evaluate to skip)",
    "eval_images_per_prompt": "images per eval prompt",
    "eval_seed": "base seed of the evaluation images",
    "eval_max_prompts": "use only the first N eval prompts",
    "threads": "torch.set_num_threads",
    "test_mode": "smoke run of seconds: 2 episodes of 4 images, 2 steps, small reference (flags given still win)",
}


_METAVARS = {
    "mode": "MODE",
    "algorithm": "{trpo,ppo}",
    "reward": "NAME",
    "model": "DIR|HUB_ID",
    "out": "DIR",
    "prompts": "FILE",
    "eval_prompts": "FILE",
    "reference": "FILE",
    "reference_diversity": "LEVEL",
    "features": "NAME",
    "feature_weights": "DIR|HUB_ID",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(2)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainingConfig` field; ``default=SUPPRESS`` so that only given flags appear."""
    types = {"int": int, "float": float, "str": str}
    for f in fields(TrainingConfig):
        default = getattr(TRAINING, f.name)
        help_text = f"{_HELP.get(f.name, f.name)} (default: {default})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        annotation = str(f.type)
        if annotation == "bool":
            if f.name == "test_mode":
                p.add_argument(_flag(f.name), action="store_true", **kw)
            else:
                p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        if f.name in ("reward_options", "policy_options"):
            p.add_argument(_flag(f.name), type=_json_dict, metavar="JSON", **kw)
            continue
        base = annotation.split("|")[0].strip()
        metavar = _METAVARS.get(f.name, {"int": "N", "float": "X"}.get(base, "VALUE"))
        p.add_argument(_flag(f.name), type=types.get(base, str), metavar=metavar, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``natgrad-diffusion`` argument parser (subcommands ``train``, ``sample``, ``evaluate``,
    ``build-reference``, ``build-features``, ``plot``)."""
    parser = _Parser(prog=PROG, description="Fine-tune text-to-image diffusion models with TRPO / PPO (natgrad).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="fine-tune a policy (writes a run directory)")
    t.add_argument("--config", type=Path, default=None, help="JSON or TOML file of TrainingConfig fields")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_train_options(t)

    s = sub.add_parser("sample", help="sample images with a trained policy (or the pretrained model)")
    s.add_argument("--run", type=Path, default=None, help="run directory (default: the pretrained model)")
    s.add_argument("--model", default=None, help="model directory or hub id (default: the run's, or the crater model)")
    s.add_argument("--prompt", action="append", default=None, help="prompt (repeatable; default: the eval prompts)")
    s.add_argument("--prompts", type=Path, default=None, help="prompts file")
    s.add_argument("--images-per-prompt", type=int, default=TRAINING.eval_images_per_prompt)
    s.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's)")
    s.add_argument("--seed", type=int, default=TRAINING.eval_seed)
    s.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG; the images go to OUT.npz too")

    e = sub.add_parser("evaluate", help="metrics table: pretrained model vs a run's fine-tuned policy")
    e.add_argument("--run", type=Path, required=True, help="run directory")
    e.add_argument("--eval-prompts", type=Path, default=None, help="prompts file (default: the run's)")
    e.add_argument("--images-per-prompt", type=int, default=None, help="default: the run's")
    e.add_argument("--out", type=Path, default=None, help="write the markdown table here too")

    r = sub.add_parser("build-reference", help="render a reference set of craters (.npz), or cut real Mars ones")
    r.add_argument("out", type=Path, help="OUT.npz; with --source mars a directory for the three split files")
    mars_help = "render craters, or crop pycda's labelled Mars tile into reference/validation/evaluation splits"
    r.add_argument("--source", choices=("render", "mars"), default="render", help=mars_help)
    r.add_argument("--n", type=int, default=TRAINING.reference_n)
    r.add_argument("--seed", type=int, default=TRAINING.reference_seed)
    r.add_argument("--size", type=int, default=32, help="image size (the embedded model makes 32×32)")
    r.add_argument("--diversity", default=TRAINING.reference_diversity)
    r.add_argument("--crop-factor", type=float, default=None, help="mars: crop side / crater diameter (2.5)")
    r.add_argument("--min-diameter", type=float, default=None, help="mars: smallest crater diameter, pixels (12)")

    f = sub.add_parser("build-features", help="feature file of a reference set (.npz)")
    f.add_argument("reference", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--extractor", default=TRAINING.features)
    f.add_argument("--weights", default=TRAINING.feature_weights)
    f.add_argument("--image-size", type=int, default=TRAINING.feature_image_size)

    pl = sub.add_parser("plot", help="PNG plots of a run's CSV")
    pl.add_argument("--run", type=Path, required=True)
    pl.add_argument("--out", type=Path, default=None, help="directory (default: RUN/plots)")
    return parser


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Fields of :class:`TrainingConfig` from a JSON or TOML file (unknown keys are an error)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ModuleNotFoundError:
        raise ValueError("reading TOML on Python 3.10 needs the tomli package (or use a JSON config)") from None
    except Exception as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table / object of TrainingConfig fields")
    data = data.get("train", data)
    known = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {path}: unknown field(s) {', '.join(unknown)}")
    return data


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` of parsed ``train`` arguments (see the module docstring for the precedence).

    ``--test-mode`` sets ``test_mode``; :func:`~natgrad_diffusion.training.train` then applies
    :data:`~natgrad_diffusion.config.TEST_MODE` to the fields still at their defaults.
    """
    names = [f.name for f in fields(TrainingConfig)]
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(load_config_file(args.config))
    if args.resume:
        out = given.get("out", values.get("out", TRAINING.out))
        saved = Path(out) / "run.json"
        if saved.is_file():
            values.update(json.loads(saved.read_text())["config"])
    values.update(given)
    return replace(TRAINING, **values)


def _cmd_train(args: argparse.Namespace) -> None:
    from .training import train

    config = training_config(args)
    result = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if result.evaluation:
        from .training import format_metrics_table

        print(f"\n{result.run_dir}: {result.episodes} episodes")
        print(format_metrics_table(result.evaluation))


def _run_config(run: Path | None) -> TrainingConfig:
    if run is None:
        return TRAINING
    from .training import load_run_config

    return load_run_config(run)


def _cmd_sample(args: argparse.Namespace) -> None:
    from .plots import save_image_grid
    from .training import DEFAULT_EVAL_PROMPTS, load_model, load_policy_from_run, load_prompts, sample_images

    config = _run_config(args.run)
    if args.images_per_prompt < 1:
        _fail(f"--images-per-prompt must be >= 1, got {args.images_per_prompt}")
    components = load_model(args.model if args.model is not None else config.model)
    policy = load_policy_from_run(args.run, components) if args.run is not None else None
    prompts = args.prompt or load_prompts(args.prompts, default=DEFAULT_EVAL_PROMPTS)
    steps = args.steps if args.steps is not None else config.steps
    if steps < 1:
        _fail(f"--steps must be >= 1, got {steps}")
    images, image_prompts = sample_images(
        components,
        prompts,
        policy=policy,
        images_per_prompt=args.images_per_prompt,
        steps=steps,
        guidance_scale=config.guidance_scale,
        eta=config.eta,
        seed=args.seed,
    )
    import numpy as np

    out = Path(args.out)
    save_image_grid(images, out, ncols=args.images_per_prompt, scale=3)
    np.savez_compressed(out.with_suffix(".npz"), images=images, prompts=np.array(image_prompts, dtype=np.str_))
    print(f"wrote {len(images)} images to {out} and {out.with_suffix('.npz')}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .training import (
        DEFAULT_EVAL_PROMPTS,
        _extractor,
        evaluate_policy,
        format_metrics_table,
        load_model,
        load_policy_from_run,
        load_prompts,
        load_reference_features,
    )

    config = _run_config(args.run)
    if args.images_per_prompt is not None:
        if args.images_per_prompt < 1:
            _fail(f"--images-per-prompt must be >= 1, got {args.images_per_prompt}")
        config = replace(config, eval_images_per_prompt=args.images_per_prompt)
    components = load_model(config.model)
    policy = load_policy_from_run(args.run, components)
    prompts_file = args.eval_prompts if args.eval_prompts is not None else config.eval_prompts
    prompts = load_prompts(prompts_file, default=DEFAULT_EVAL_PROMPTS)[: config.eval_max_prompts]
    extractor = _extractor(config)
    reference, _, _ = load_reference_features(config, extractor, components.default_size()[0])
    rows = {}
    for name, pretrained in (("pretrained", True), ("fine-tuned", False)):
        rows[name], _ = evaluate_policy(
            components, policy, prompts, extractor, reference, config, pretrained=pretrained
        )
    table = format_metrics_table(rows)
    print(table)
    if args.out is not None:
        from .logs import atomic_write_text

        atomic_write_text(args.out, table + "\n")


def _cmd_build_mars_reference(args: argparse.Namespace) -> None:
    from .craters.mars import build_mars_reference
    from .craters.reference import load_reference_set

    crop_factor = 2.5 if args.crop_factor is None else args.crop_factor
    min_diameter = 12.0 if args.min_diameter is None else args.min_diameter
    if not crop_factor >= 1.0:
        _fail(f"--crop-factor must be >= 1 (the crop holds the whole crater), got {crop_factor}")
    if not min_diameter >= 1.0:
        _fail(f"--min-diameter must be >= 1 pixel, got {min_diameter}")
    if args.size < 8:
        _fail(f"--size must be >= 8, got {args.size}")
    if args.out.suffix == ".npz" or (args.out.exists() and not args.out.is_dir()):
        _fail(
            f"--source mars writes reference/validation/evaluation .npz files: OUT must be a directory, got {args.out}"
        )
    paths = build_mars_reference(
        args.out, crop_factor=crop_factor, min_diameter=min_diameter, size=args.size, seed=args.seed
    )
    for name, path in paths.items():
        print(f"wrote {len(load_reference_set(path))} {name} Mars crater crops ({args.size}×{args.size}) to {path}")


def _cmd_build_reference(args: argparse.Namespace) -> None:
    from .craters.reference import DIVERSITY_PRESETS, generate_reference_set, save_reference_set

    if args.source == "mars":
        _cmd_build_mars_reference(args)
        return
    if args.crop_factor is not None or args.min_diameter is not None:
        _fail("--crop-factor and --min-diameter apply to --source mars only")
    if args.n < 2:
        _fail(f"--n must be >= 2, got {args.n}")
    if args.size < 8:
        _fail(f"--size must be >= 8, got {args.size}")
    try:
        diversity = args.diversity if args.diversity in DIVERSITY_PRESETS else float(args.diversity)
    except ValueError:
        _fail(f"--diversity must be one of {', '.join(DIVERSITY_PRESETS)} or a number in [0, 1], got {args.diversity}")
    ref = generate_reference_set(args.n, seed=args.seed, size=args.size, diversity=diversity)
    save_reference_set(ref, args.out)
    print(f"wrote {len(ref)} crater images ({ref.size}×{ref.size}) to {args.out}")


def _cmd_build_features(args: argparse.Namespace) -> None:
    from .features import build_reference_features

    if not args.reference.is_file():
        _fail(f"reference file {args.reference} not found")
    fs = build_reference_features(
        args.reference, args.out, args.extractor, weights=args.weights, image_size=args.image_size
    )
    source = fs.extractor.get("weights")
    print(f"wrote features {fs.features.shape} to {args.out} (extractor {fs.extractor.get('name')}, weights {source})")


def _cmd_plot(args: argparse.Namespace) -> None:
    from .training import plot_run

    for path in plot_run(args.run, args.out):
        print(f"wrote {path}")


_COMMANDS = {
    "train": _cmd_train,
    "sample": _cmd_sample,
    "evaluate": _cmd_evaluate,
    "build-reference": _cmd_build_reference,
    "build-features": _cmd_build_features,
    "plot": _cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``natgrad-diffusion`` console script (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _fail("interrupted (the run directory keeps its last checkpoint; continue with --resume)")
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, TypeError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(message)


if __name__ == "__main__":
    main()
