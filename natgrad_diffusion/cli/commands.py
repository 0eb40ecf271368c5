"""The ``natgrad-diffusion`` subcommands (:mod:`natgrad_diffusion.cli.app` parses; this module acts).

Each command checks its arguments first, its output paths included (:mod:`natgrad_diffusion.cli.outputs`,
:func:`natgrad_diffusion.core.rundir.check_run_dir`), and imports torch and the diffusion stack only after, so that a bad
value fails at once with one line and no file of the user's is overwritten.  Outputs are written atomically
(:func:`natgrad_diffusion.core.logs.atomic_output`): a kill never leaves half a file.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from ..core.config import TRAINING, TrainingConfig
from ..core.logs import atomic_output
from ..core.rundir import CSV_FILE, PLOT_FILE, PLOTS_DIR, check_run_dir, is_run
from ..data.prompts import job_prompts, load_prompts
from ..training.checks import load_run_config, prepare_config, resolve_defaults, validate_config
from .outputs import check_output_dir, check_output_file
from .settings import training_config

__all__ = ["COMMANDS"]


def _refuse(message: str) -> NoReturn:
    """A bad argument: ``main`` prints it as one line ``natgrad-diffusion: error: message`` (exit status 2)."""
    raise ValueError(message)


def _cmd_train(args: argparse.Namespace) -> None:
    config, explicit = training_config(args)
    config = prepare_config(config, explicit)  # the one check, before the heavy imports below
    check_run_dir(config.out, resume=args.resume, overwrite=args.overwrite)
    from ..evaluation.verdict import summary
    from ..training.loop import run_prepared

    result = run_prepared(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print()
    print(summary(result))


def _run_config(run: Path | None) -> TrainingConfig:
    return resolve_defaults(TRAINING) if run is None else load_run_config(run)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        _refuse(f"{name} must be >= 1, got {value}")


#: the image formats ``sample --out`` writes (the first is added to a name without a suffix)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _cmd_sample(args: argparse.Namespace) -> None:
    _positive("--images-per-prompt", args.images_per_prompt)
    _positive("--steps", args.steps)
    default = (args.run if args.run is not None else Path("runs")) / "samples.png"
    out = check_output_file(args.out if args.out is not None else default, suffixes=IMAGE_SUFFIXES,
                            overwrite=args.overwrite, inputs=[args.prompts])  # fmt: skip
    npz = check_output_file(out.with_suffix(".npz"), suffixes=(".npz",), overwrite=args.overwrite,
                            inputs=[args.prompts])  # fmt: skip
    config = _run_config(args.run)
    prompts = args.prompt or (load_prompts(args.prompts) if args.prompts is not None else job_prompts(config, "test"))
    import numpy as np

    from ..evaluation.metrics import sample_images
    from ..evaluation.plots import save_image_grid
    from ..sampling.models import load_model
    from ..training.loop import load_policy_from_run

    components = load_model(args.model if args.model is not None else config.model)
    policy = load_policy_from_run(args.run, components) if args.run is not None else None
    images, image_prompts = sample_images(
        components, prompts, policy=policy, images_per_prompt=args.images_per_prompt,
        steps=args.steps if args.steps is not None else config.steps, guidance_scale=config.guidance_scale,
        eta=config.eta, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    save_image_grid(images, out, ncols=args.images_per_prompt, row_labels=prompts, scale=3)
    with atomic_output(npz) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, prompts=np.array(image_prompts, dtype=np.str_))
    source = f"the policy of {args.run}" if args.run is not None else "the pretrained model"
    print(f"wrote {len(images)} images of {source} to {out.resolve()} and {npz.resolve()}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    _positive("--images-per-prompt", args.images_per_prompt)
    out = None
    if args.out is not None:
        out = check_output_file(args.out, suffixes=(".md", ".markdown", ".txt"), overwrite=args.overwrite,
                                inputs=[args.eval_prompts])  # fmt: skip
    config = _run_config(args.run)
    if args.images_per_prompt is not None:
        config = replace(config, eval_images_per_prompt=args.images_per_prompt)
    if args.eval_prompts is not None:
        config = replace(config, eval_prompts=str(args.eval_prompts))
    prompts = job_prompts(config, "test")[: config.eval_max_prompts]
    validate_config(config)
    from ..core.logs import atomic_write_text
    from ..data.references import ReferenceData
    from ..evaluation.metrics import evaluate_policy, evaluation_spaces, format_metrics_table, table_columns
    from ..rewards.reference_features import feature_extractor, load_reference_features
    from ..sampling.models import load_model
    from ..training.loop import load_policy_from_run

    components = load_model(config.model)
    policy = load_policy_from_run(args.run, components)
    extractor = feature_extractor(config)
    data = ReferenceData(config, components.image_shape())
    reference, _, _ = load_reference_features(data, extractor)
    spaces = evaluation_spaces(config, extractor, reference, data)
    rows = {}
    for name, pretrained in (("pretrained", True), ("fine-tuned", False)):
        rows[name], _ = evaluate_policy(components, policy, prompts, spaces, config, pretrained=pretrained)
    table = format_metrics_table(rows, columns=table_columns(spaces))
    print(table)
    if out is not None:
        atomic_write_text(out, table + "\n")
        print(f"wrote the table to {out.resolve()}")


def _mars_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"size": args.size, "seed": args.seed}
    if args.crop_factor is not None:
        if not args.crop_factor >= 1.0:
            _refuse(f"--crop-factor must be >= 1 (the crop holds the whole crater), got {args.crop_factor}")
        options["crop_factor"] = args.crop_factor
    if args.min_diameter is not None:
        if not args.min_diameter >= 1.0:
            _refuse(f"--min-diameter must be >= 1 pixel, got {args.min_diameter}")
        options["min_diameter"] = args.min_diameter
    if args.out.suffix == ".npz" or (args.out.exists() and not args.out.is_dir()):
        _refuse(
            f"--source mars writes reference/validation/evaluation .npz files: OUT must be a directory, got {args.out}"
        )
    return options


def _check_reference_args(args: argparse.Namespace) -> None:
    if args.source != "mars" and (args.crop_factor is not None or args.min_diameter is not None):
        _refuse("--crop-factor and --min-diameter apply to --source mars only")
    if (args.source == "folder") != (args.folder is not None):
        _refuse("--folder DIR goes with --source folder (and --source folder needs --folder DIR)")
    if args.size < 8:
        _refuse(f"--size must be >= 8, got {args.size}")
    if args.n < 2:
        _refuse(f"--n must be >= 2, got {args.n}")
    if args.source == "render":
        validate_config(replace(TRAINING, reference_diversity=args.diversity))


def _cmd_build_reference(args: argparse.Namespace) -> None:
    from ..data.craters import reference as refs

    _check_reference_args(args)
    if args.source == "mars":
        from ..data.craters.mars import SPLITS, mars_reference_sets

        options = _mars_options(args)
        out_dir = check_output_dir(args.out, [f"{s}.npz" for s in SPLITS], overwrite=args.overwrite, what="OUT")
        for name, ref in mars_reference_sets(**options).items():
            with atomic_output(out_dir / f"{name}.npz") as tmp:
                refs.save_reference_set(ref, tmp)
            print(f"wrote {len(ref)} {name} Mars crater crops ({args.size}×{args.size}) to {out_dir / f'{name}.npz'}")
        return
    out = check_output_file(args.out, suffixes=(".npz",), overwrite=args.overwrite, what="OUT")
    if args.source == "folder":
        ref = refs.reference_from_folder(args.folder, size=args.size)
    elif args.source == "moon":
        ref = refs.reference_from_moon(args.n, size=args.size, seed=args.seed)
    else:
        diversity = args.diversity if args.diversity in refs.DIVERSITY_PRESETS else float(args.diversity)
        ref = refs.generate_reference_set(args.n, seed=args.seed, size=args.size, diversity=diversity)
    with atomic_output(out) as tmp:
        refs.save_reference_set(ref, tmp)
    kind = {"render": "crater", "moon": "lunar", "folder": "folder"}[args.source]
    print(f"wrote {len(ref)} {kind} images ({ref.size}×{ref.size}) to {out}")


def _cmd_build_features(args: argparse.Namespace) -> None:
    _positive("--image-size", args.image_size)
    if not args.reference.is_file():
        _refuse(f"reference file {args.reference} not found")
    out = check_output_file(args.out, suffixes=(".npz",), overwrite=args.overwrite, what="OUT",
                            inputs=[args.reference])  # fmt: skip
    from ..data.craters.reference import load_reference_set
    from ..rewards.features import build_reference_features, save_features

    n = len(load_reference_set(args.reference))
    if n < 2:
        _refuse(f"{args.reference} holds {n} images; a reference needs at least 2")
    options = {"weights": args.weights} if args.weights is not None else {}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    fs = build_reference_features(args.reference, None, args.extractor, **options)
    with atomic_output(out) as tmp:
        save_features(fs, tmp)
    source = fs.extractor.get("weights")
    print(f"wrote features {fs.features.shape} to {out} (extractor {fs.extractor.get('name')}, weights {source})")


def _cmd_plot(args: argparse.Namespace) -> None:
    out = args.out if args.out is not None else args.run / PLOTS_DIR
    if (args.run / CSV_FILE).is_file():  # else plot_run says there is nothing to plot
        run = args.run if is_run(args.run) else None  # a run's own plot is regenerated without --overwrite
        check_output_dir(out, [PLOT_FILE], overwrite=args.overwrite, run=run)
    from ..evaluation.plots import plot_run

    for path in plot_run(args.run, out):
        print(f"wrote {path}")


def _cmd_plot_features(args: argparse.Namespace) -> None:
    if not args.prefix or "/" in args.prefix or "\\" in args.prefix:
        _refuse(f"--prefix {args.prefix!r} must be a file name prefix (not empty, no path separator)")
    names = [f"{args.prefix}_{m}.png" for m in ("pca", "tsne")]
    names += [f"{args.prefix}_grid.png"] if args.reference is not None else []
    check_output_dir(args.out_dir, names, overwrite=args.overwrite, what="--out-dir")
    from ..evaluation.plots import plot_features

    for path in plot_features(args.features, args.out_dir, args.prefix, args.reference):
        print(f"wrote {path}")


def _cmd_supervise(args: argparse.Namespace) -> None:
    from dataclasses import replace as replaced

    from ..core.config import SUPERVISED
    from ..supervised.stage import check_supervised_dir

    config = replaced(SUPERVISED, steps=args.steps, rank=args.rank, lr=args.lr, batch_size=args.batch_size,
                      seed=args.seed, threads=args.threads)  # fmt: skip
    check_supervised_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.data != "mars" and not Path(args.data).is_file():
        _refuse(f"--data {args.data} not found (mars, or a reference-set .npz)")
    from ..sampling.models import DEFAULT_MODEL_DIR, load_model
    from ..supervised.stage import finetune, training_set

    data = training_set(args.data)
    components = load_model(args.model)
    result = finetune(components, data, args.out, config, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress, source=str(args.model or DEFAULT_MODEL_DIR))  # fmt: skip
    print(
        f"wrote the supervised model ({result.steps} steps, final loss {result.losses[-1]:.4f}) to {result.out}; "
        f"use it with: natgrad-diffusion train --model {result.out}"
    )


COMMANDS = {
    "supervise": _cmd_supervise,
    "train": _cmd_train,
    "sample": _cmd_sample,
    "evaluate": _cmd_evaluate,
    "build-reference": _cmd_build_reference,
    "build-features": _cmd_build_features,
    "plot": _cmd_plot,
    "plot-features": _cmd_plot_features,
}
