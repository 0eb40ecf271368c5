"""``natgrad-diffusion``: train, sample, evaluate, build reference sets and features, plot.

::

    natgrad-diffusion train [--config FILE] [--mode DIVERSITY_POLICY] [--algorithm trpo] [--reward MMD]
                            [--episodes N] [--batch-size B] [--steps T] [--seed S] [--out DIR] [--model DIR|HUB_ID]
                            [--max-kl X --damping X --cg-iters N ...] [--ppo-lr X --ppo-epochs N ...]
                            [--resume] [--test-mode] ...
    natgrad-diffusion sample [--run DIR] [--prompt TEXT ...] [--out samples.png]
    natgrad-diffusion evaluate --run DIR            # metrics table: pretrained vs fine-tuned
    natgrad-diffusion build-reference OUT.npz [--n 512 --size 32 --diversity broad]
    natgrad-diffusion build-reference --source mars OUT_DIR [--crop-factor 2.5 --min-diameter 12 --seed 0]
    natgrad-diffusion build-reference --source folder OUT.npz --folder DIR   (or --source moon)
    natgrad-diffusion build-features REF.npz OUT.npz [--extractor resnet18 --image-size 64]
    natgrad-diffusion plot --run DIR
    natgrad-diffusion plot-features FEATURES.npz [--reference REF.npz] [--out-dir DIR]

Every ``train`` option is a field of :class:`natgrad_diffusion.core.config.TrainingConfig` or of its nested groups
(``trust_region``: ``--max-kl``, ``--damping``, ...; ``ppo``: ``--ppo-lr``, ``--ppo-epochs``, ...; ``chunks``:
``--fvp-subsample``, ...), whose defaults are the defaults here.  Precedence: defaults < config file
(``--config``, JSON or TOML, field names as keys, groups as tables) < the saved configuration of the run
(``--resume``) < ``--test-mode`` < flags given on the command line.

Arguments are checked before torch and the diffusion stack are imported: a bad value gives a one-line
``natgrad-diffusion: error: ...`` and exit status 2 at once (``--debug`` shows tracebacks).  Under
``torchrun --nproc-per-node K -m natgrad_diffusion train ...`` the job runs on ``K`` processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from ..core.config import FEATURE_NAMES, LIMITS, SUPERVISED, TRAINING, TrainingConfig
from ..core.flat_settings import DEPRECATED_NAMES, GROUPS, flat_names, setting_help
from .settings import flag_of, load_config_file, training_config

__all__ = ["build_parser", "load_config_file", "main", "training_config"]

PROG = "natgrad-diffusion"

#: the top-level modules of the ``diffusion`` extra's packages (pyproject.toml): a command that finds one missing
#: says which extra to install
DIFFUSION_EXTRA_MODULES = frozenset({"diffusers", "transformers", "peft", "accelerate", "safetensors", "scipy",
                                     "matplotlib", "tqdm", "numpy", "skimage", "PIL", "sklearn"})  # fmt: skip

#: how the help of a nested group's option starts (the field's own help follows)
_GROUP_LABELS = {None: "", "trust_region": "TRPO: ", "ppo": "PPO: ", "klpg": "KL-regularised PG: ",
                 "chunks": "LORA_UNET TRPO: "}  # fmt: skip

_METAVARS = {
    "mode": "MODE",
    "algorithm": "{trpo,ppo,klpg}",
    "reward": "NAME",
    "model": "DIR|HUB_ID",
    "out": "DIR",
    "prompts": "FILE",
    "eval_prompts": "FILE",
    "reference": "FILE",
    "reference_diversity": "LEVEL",
    "features": "NAME",
    "feature_weights": "DIR|HUB_ID",
    "trpo_fvp_method": "METHOD",
    "lora_fvp_method": "METHOD",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def fail(message: str) -> NoReturn:
    """Print ``natgrad-diffusion: error: message`` and exit with status 2."""
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(2)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None


def _json_dict(text: str) -> dict[str, Any]:
    value = _json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _bounded(lo: int, hi: int) -> Any:
    """An argparse ``type``: an integer in ``[lo, hi]`` (the error names the range and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def _limit(name: str) -> Any:
    """:func:`_bounded` over ``LIMITS[name]``."""
    lo, hi = LIMITS[name]
    return _bounded(int(lo), int(hi))


def _prompt(text: str) -> str:
    """An argparse ``type``: a non-empty prompt (:func:`~natgrad_diffusion.data.prompts.check_prompt`)."""
    from ..core.errors import TrainingError
    from ..data.prompts import check_prompt

    try:
        return check_prompt(text, "the prompt")
    except TrainingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out_path(text: str) -> Path:
    """An output path (``""`` is refused: it would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return Path(text)


_OVERWRITE = "replace existing output files (refused by default)"


def _names(text: str) -> tuple[str, ...]:
    """``"resnet18,pixels"`` → ``("resnet18", "pixels")`` (an empty string: none)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _number(text: str) -> int | float:
    """An int when the text is one (``--fvp-subsample 64`` is a count, ``0.25`` a fraction)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _add_option(p: argparse.ArgumentParser, name: str, annotation: str, default: Any, help_text: str) -> None:
    """One ``--flag`` for the setting ``name`` (``default=SUPPRESS``: only the flags given appear)."""
    if "default" not in help_text:
        help_text += f" (default: {default})"
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": name}
    flag = flag_of(name)
    if annotation == "bool":
        action = "store_true" if name == "test_mode" else argparse.BooleanOptionalAction
        p.add_argument(flag, action=action, **kw)
    elif name in ("reward_options", "policy_options"):
        p.add_argument(flag, type=_json_dict, metavar="JSON", **kw)
    elif annotation.startswith("tuple[str"):
        p.add_argument(flag, type=_names, metavar="A,B", **kw)
    elif annotation.startswith("tuple"):
        p.add_argument(flag, type=_json_value, metavar="JSON", **kw)
    else:
        base = annotation.split("|")[0].strip()
        types = {"int": int, "float": _number if "int" in annotation else float, "str": str}
        metavar = _METAVARS.get(name, {"int": "N", "float": "X"}.get(base, "VALUE"))
        p.add_argument(flag, type=types.get(base, str), metavar=metavar, **kw)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainingConfig` field and per field of its nested groups (under its flat name)."""
    for f in fields(TrainingConfig):
        if f.name not in GROUPS:
            _add_option(p, f.name, str(f.type), getattr(TRAINING, f.name), setting_help(None, f.name))
    for flat, (group, name) in flat_names().items():
        value = getattr(getattr(TRAINING, group), name)
        annotation = str(next(f.type for f in fields(getattr(TRAINING, group)) if f.name == name))
        _add_option(p, flat, annotation, value, _GROUP_LABELS[group] + setting_help(group, name))
    for old, new in DEPRECATED_NAMES.items():
        p.add_argument(flag_of(old), dest=old, default=argparse.SUPPRESS, metavar="VALUE",
                       help=f"deprecated: use {flag_of(new)}")  # fmt: skip


def _add_data_commands(sub: Any) -> None:
    r = sub.add_parser("build-reference", help="a reference set .npz: rendered craters, real Mars crops, a folder")
    r.add_argument("out", type=_out_path, help="OUT.npz (with --source mars: a directory for the three split files)")
    r.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    r.add_argument(
        "--source",
        choices=("render", "mars", "folder", "moon"),
        default="render",
        help="render craters (default); crop pycda's labelled Mars tile into reference / validation / evaluation "
        "splits; the images of --folder; or patches of skimage's moon image",
    )
    r.add_argument("--n", type=_limit("images"), default=TRAINING.reference_n, help="images (render, moon)")
    r.add_argument(
        "--seed", type=_limit("seed"), default=TRAINING.reference_seed, help="seed of the renders, patches or split"
    )
    r.add_argument(
        "--size", type=_limit("image_size"), default=32, help="image size in pixels (the embedded model makes 32×32)"
    )
    r.add_argument("--diversity", default=TRAINING.reference_diversity, help="render: narrow, medium, broad or 0–1")
    r.add_argument("--crop-factor", type=float, default=None, help="mars: crop side / crater diameter (2.5)")
    r.add_argument("--min-diameter", type=float, default=None, help="mars: smallest crater diameter, pixels (12)")
    r.add_argument("--folder", type=Path, default=None, help="folder: the directory of images")
    f = sub.add_parser("build-features", help="feature file of a reference set (.npz)")
    f.add_argument("reference", type=Path, help="reference set .npz")
    f.add_argument("out", type=_out_path, help="features .npz to write")
    f.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    f.add_argument(
        "--extractor",
        default=TRAINING.features,
        choices=FEATURE_NAMES,
        help=f"crater, resnet18, clip, pixels or spectrum (default: {TRAINING.features})",
    )
    f.add_argument("--weights", default=TRAINING.feature_weights, help="extractor weights: hub id or directory")
    f.add_argument(
        "--image-size", type=_limit("feature_image_size"), default=None,
        help="images are resized to this size (default: the extractor's own: 32 for crater, 224 for resnet18)",
    )  # fmt: skip


def _add_run_commands(sub: Any) -> None:
    s = sub.add_parser("sample", help="sample images with a trained policy (or the pretrained model)")
    s.add_argument("--run", type=Path, default=None, help="run directory (default: the pretrained model)")
    s.add_argument("--model", default=None, help="model directory or hub id (default: the run's, or the crater model)")
    s.add_argument(
        "--prompt", action="append", type=_prompt, default=None, help="prompt (repeatable; default: the eval prompts)"
    )
    s.add_argument("--prompts", type=Path, default=None, help="prompts file, one per line")
    s.add_argument(
        "--images-per-prompt", type=_bounded(1, 1000), default=TRAINING.eval_images_per_prompt,
        help=f"images per prompt, one grid row each (default: {TRAINING.eval_images_per_prompt})",
    )  # fmt: skip
    s.add_argument("--steps", type=_limit("steps"), default=None, help="denoising steps (default: the run's)")
    s.add_argument(
        "--seed", type=_limit("seed"), default=TRAINING.eval_seed, help="seed of the first image (image i: seed + i)"
    )
    s.add_argument(
        "--out",
        type=_out_path,
        default=None,
        help="grid PNG (default: RUN/samples.png, or runs/samples.png without --run); the images go to OUT.npz too",
    )
    s.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = sub.add_parser("evaluate", help="metrics table: pretrained model vs a run's fine-tuned policy")
    e.add_argument("--run", type=Path, required=True, help="the run directory to evaluate")
    e.add_argument("--eval-prompts", type=Path, default=None, help="prompts file (default: the run's)")
    e.add_argument("--images-per-prompt", type=_bounded(2, 1000), default=None, help="default: the run's")
    e.add_argument("--out", type=_out_path, default=None, help="write the markdown table here too (.md)")
    e.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    pl = sub.add_parser("plot", help="PNG plots of a run's CSV")
    pl.add_argument("--run", type=Path, required=True, help="the run directory whose train.csv to plot")
    pl.add_argument("--out", type=_out_path, default=None, help="directory (default: RUN/plots)")
    pl.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    pf = sub.add_parser("plot-features", help="PCA and t-SNE plots of a features file (and a grid of its images)")
    pf.add_argument("features", type=Path, help="features .npz (build-features)")
    pf.add_argument("--reference", type=Path, default=None, help="its reference set .npz, for an image grid")
    pf.add_argument("--out-dir", type=_out_path, default=Path("."), help="directory of the PNGs (default: .)")
    pf.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    pf.add_argument("--prefix", default="crater_reference", help="file name prefix")


def _add_supervise_command(sub: Any) -> None:
    s = sub.add_parser("supervise", help="the supervised stage: fine-tune a model on real crops (a diffusers folder)")
    s.add_argument("--out", type=_out_path, required=True, help="folder of the fine-tuned model (new or empty)")
    s.add_argument("--model", default=None, help="model to fine-tune: diffusers folder or hub id (default: the "
                   "embedded crater model)")  # fmt: skip
    s.add_argument("--data", default="mars", help="mars (the multi-scale real crater crops of the reference region, "
                   "shipped) or a reference-set .npz with captions (build-reference)")  # fmt: skip
    s.add_argument("--steps", type=_bounded(1, 10**7), default=SUPERVISED.steps, help="optimiser steps (default: "
                   f"{SUPERVISED.steps})")  # fmt: skip
    s.add_argument("--rank", type=_bounded(0, 1024), default=SUPERVISED.rank, help="LoRA rank; 0 trains the whole "
                   f"UNet (default: {SUPERVISED.rank})")  # fmt: skip
    s.add_argument("--lr", type=float, default=SUPERVISED.lr, help=f"learning rate (default: {SUPERVISED.lr})")
    s.add_argument("--batch-size", type=_bounded(1, 4096), default=SUPERVISED.batch_size, help="images per step "
                   f"(default: {SUPERVISED.batch_size})")  # fmt: skip
    s.add_argument(
        "--seed",
        type=_limit("seed"),
        default=SUPERVISED.seed,
        help="seed of the adapters, minibatches, noises and timesteps (default: 0)",
    )
    s.add_argument("--threads", type=_bounded(1, 1024), default=None, help="torch threads (default: torch's own)")
    s.add_argument("--resume", action="store_true", help="continue the fine-tune in --out from its last state")
    s.add_argument("--overwrite", action="store_true", help="replace the supervised model in --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The ``natgrad-diffusion`` argument parser (subcommands ``train``, ``sample``, ``evaluate``,
    ``build-reference``, ``build-features``, ``plot``, ``plot-features``)."""
    parser = _Parser(prog=PROG, description="Fine-tune text-to-image diffusion models with TRPO / PPO (natgrad).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="fine-tune a policy (writes a run directory)")
    t.add_argument("--config", type=Path, default=None, help="JSON or TOML file of TrainingConfig fields")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_train_options(t)
    _add_supervise_command(sub)
    _add_run_commands(sub)
    _add_data_commands(sub)
    return parser


def _message(exc: BaseException) -> str:
    """The one line ``main`` prints for ``exc``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in DIFFUSION_EXTRA_MODULES:
        return (f"this command needs the diffusion extra (no module {exc.name!r}): "
                'pip install -c constraints.txt "natgrad[diffusion]"')  # fmt: skip
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"cannot use{where}: {exc.strerror or text or type(exc).__name__}"
    if isinstance(exc, MemoryError):
        return f"out of memory{f' ({text})' if text else ''}: lower --batch-size, the image sizes or the chunk sizes"
    if isinstance(exc, FloatingPointError):  # natgrad.NonFiniteError: NaN or infinite numbers
        return f"{text or type(exc).__name__} (numbers became NaN or infinite; --debug shows the traceback)"
    if isinstance(exc, (ValueError, TypeError, RuntimeError)):
        return text or type(exc).__name__
    return f"internal error {type(exc).__name__}: {text} (--debug shows the traceback; please report it)"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``natgrad-diffusion`` console script (``argv`` defaults to ``sys.argv[1:]``).

    Every failure ends in one line ``natgrad-diffusion: error: ...`` and exit status 2 (``--debug`` shows the
    traceback instead), Ctrl-C included, from the first import on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, debug = None, "--debug" in argv
    try:
        from .commands import COMMANDS

        args = build_parser().parse_args(argv)
        command, debug = args.command, args.debug
        COMMANDS[command](args)
    except KeyboardInterrupt:
        if command == "train":
            fail("interrupted (the run directory keeps its last checkpoint; continue with --resume)")
        fail("interrupted")
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        fail(_message(exc))
