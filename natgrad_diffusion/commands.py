"""The ``natgrad-diffusion`` subcommands (:mod:`natgrad_diffusion.cli` parses; this module acts).

Each command checks its arguments first and imports torch and the diffusion stack only after, so that a bad value
fails at once with one line.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cli import fail, training_config
from .config import TRAINING, TrainingConfig
from .job import (
    job_prompts,
    load_prompts,
    load_run_config,
    resolve_defaults,
    validate_config,
    with_test_mode,
)

__all__ = ["COMMANDS"]


def _cmd_train(args: argparse.Namespace) -> None:
    config, explicit = training_config(args)
    validate_config(with_test_mode(config, explicit))  # before the heavy imports below
    from .training import train
    from .verdict import summary

    result = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                   explicit=explicit)  # fmt: skip
    print()
    print(summary(result))


def _run_config(run: Path | None) -> TrainingConfig:
    return resolve_defaults(TRAINING) if run is None else load_run_config(run)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        fail(f"{name} must be >= 1, got {value}")


def _cmd_sample(args: argparse.Namespace) -> None:
    _positive("--images-per-prompt", args.images_per_prompt)
    _positive("--steps", args.steps)
    config = _run_config(args.run)
    prompts = args.prompt or (load_prompts(args.prompts) if args.prompts is not None else job_prompts(config, "test"))
    import numpy as np

    from .evaluation import sample_images
    from .job import load_model
    from .plots import save_image_grid
    from .training import load_policy_from_run

    components = load_model(args.model if args.model is not None else config.model)
    policy = load_policy_from_run(args.run, components) if args.run is not None else None
    images, image_prompts = sample_images(
        components, prompts, policy=policy, images_per_prompt=args.images_per_prompt,
        steps=args.steps if args.steps is not None else config.steps, guidance_scale=config.guidance_scale,
        eta=config.eta, seed=args.seed,
    )  # fmt: skip
    out = Path(args.out)
    save_image_grid(images, out, ncols=args.images_per_prompt, row_labels=prompts, scale=3)
    np.savez_compressed(out.with_suffix(".npz"), images=images, prompts=np.array(image_prompts, dtype=np.str_))
    source = f"the policy of {args.run}" if args.run is not None else "the pretrained model"
    print(f"wrote {len(images)} images of {source} to {out.resolve()} and {out.with_suffix('.npz').resolve()}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    _positive("--images-per-prompt", args.images_per_prompt)
    config = _run_config(args.run)
    if args.images_per_prompt is not None:
        config = replace(config, eval_images_per_prompt=args.images_per_prompt)
    if args.eval_prompts is not None:
        config = replace(config, eval_prompts=str(args.eval_prompts))
    prompts = job_prompts(config, "test")[: config.eval_max_prompts]
    validate_config(config)
    from .evaluation import evaluate_policy, evaluation_spaces, format_metrics_table, table_columns
    from .job import feature_extractor, load_model, load_reference_features
    from .logs import atomic_write_text
    from .training import load_policy_from_run

    components = load_model(config.model)
    policy = load_policy_from_run(args.run, components)
    extractor = feature_extractor(config)
    reference, _, _ = load_reference_features(config, extractor, components.image_shape())
    spaces = evaluation_spaces(config, extractor, reference, components.image_shape())
    rows = {}
    for name, pretrained in (("pretrained", True), ("fine-tuned", False)):
        rows[name], _ = evaluate_policy(components, policy, prompts, spaces, config, pretrained=pretrained)
    table = format_metrics_table(rows, columns=table_columns(spaces))
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table + "\n")


def _mars_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"size": args.size, "seed": args.seed}
    if args.crop_factor is not None:
        if not args.crop_factor >= 1.0:
            fail(f"--crop-factor must be >= 1 (the crop holds the whole crater), got {args.crop_factor}")
        options["crop_factor"] = args.crop_factor
    if args.min_diameter is not None:
        if not args.min_diameter >= 1.0:
            fail(f"--min-diameter must be >= 1 pixel, got {args.min_diameter}")
        options["min_diameter"] = args.min_diameter
    if args.out.suffix == ".npz" or (args.out.exists() and not args.out.is_dir()):
        fail(
            f"--source mars writes reference/validation/evaluation .npz files: OUT must be a directory, got {args.out}"
        )
    return options


def _check_reference_args(args: argparse.Namespace) -> None:
    if args.source != "mars" and (args.crop_factor is not None or args.min_diameter is not None):
        fail("--crop-factor and --min-diameter apply to --source mars only")
    if (args.source == "folder") != (args.folder is not None):
        fail("--folder DIR goes with --source folder (and --source folder needs --folder DIR)")
    if args.size < 8:
        fail(f"--size must be >= 8, got {args.size}")
    if args.n < 2:
        fail(f"--n must be >= 2, got {args.n}")
    if args.source == "render":
        validate_config(replace(TRAINING, reference_diversity=args.diversity))


def _cmd_build_reference(args: argparse.Namespace) -> None:
    from .craters import reference as refs

    _check_reference_args(args)
    if args.source == "mars":
        from .craters.mars import build_mars_reference

        options = _mars_options(args)
        for name, path in build_mars_reference(args.out, **options).items():
            n = len(refs.load_reference_set(path))
            print(f"wrote {n} {name} Mars crater crops ({args.size}×{args.size}) to {path}")
        return
    if args.source == "folder":
        ref = refs.reference_from_folder(args.folder, size=args.size)
    elif args.source == "moon":
        ref = refs.reference_from_moon(args.n, size=args.size, seed=args.seed)
    else:
        diversity = args.diversity if args.diversity in refs.DIVERSITY_PRESETS else float(args.diversity)
        ref = refs.generate_reference_set(args.n, seed=args.seed, size=args.size, diversity=diversity)
    refs.save_reference_set(ref, args.out)
    kind = {"render": "crater", "moon": "lunar", "folder": "folder"}[args.source]
    print(f"wrote {len(ref)} {kind} images ({ref.size}×{ref.size}) to {args.out}")


def _cmd_build_features(args: argparse.Namespace) -> None:
    _positive("--image-size", args.image_size)
    if not args.reference.is_file():
        fail(f"reference file {args.reference} not found")
    from .craters.reference import load_reference_set
    from .features import build_reference_features

    n = len(load_reference_set(args.reference))
    if n < 2:
        fail(f"{args.reference} holds {n} images; a reference needs at least 2")
    options = {"weights": args.weights} if args.weights is not None else {}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    fs = build_reference_features(args.reference, args.out, args.extractor, **options)
    source = fs.extractor.get("weights")
    print(f"wrote features {fs.features.shape} to {args.out} (extractor {fs.extractor.get('name')}, weights {source})")


def _cmd_plot(args: argparse.Namespace) -> None:
    from .plots import plot_run

    for path in plot_run(args.run, args.out):
        print(f"wrote {path}")


def _cmd_plot_features(args: argparse.Namespace) -> None:
    from .plots import plot_features

    for path in plot_features(args.features, args.out_dir, args.prefix, args.reference):
        print(f"wrote {path}")


COMMANDS = {
    "train": _cmd_train,
    "sample": _cmd_sample,
    "evaluate": _cmd_evaluate,
    "build-reference": _cmd_build_reference,
    "build-features": _cmd_build_features,
    "plot": _cmd_plot,
    "plot-features": _cmd_plot_features,
}
