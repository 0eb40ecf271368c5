"""Write a diffusers folder with the Stable Diffusion v1.5 architecture and RANDOM, seeded weights.

    python scripts/make_sd15_layout.py                                  # runs/sd15-random: fp32, 512 px, ~4.3 GB
    python scripts/make_sd15_layout.py --resolution 256 --out runs/sd15-256
    python scripts/make_sd15_layout.py --dtype float16 --out runs/sd15-fp16
    python scripts/make_sd15_layout.py --width 0.025 --resolution 64 --out runs/sd15-tiny   # the tests' tiny copy

The folder is what ``natgrad-diffusion train --model FOLDER`` takes (``natgrad_diffusion.sampling.sd_layout``): the
UNet (~860M parameters), a CLIP text encoder of ViT-L/14 size, the SD VAE, SD v1.5's DDIM scheduler and an offline
tokenizer.  The weights are random: use it for speed and memory, never for images.  Its ``natgrad_layout.json`` says
so, and so does every result made with it.  It goes under ``runs/`` (ignored by git) unless ``--out`` names a folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "sd15-random", help="the folder to write (new or empty)")
    p.add_argument("--width", type=float, default=1.0, help="channel-width factor, (0, 1] (default 1: SD v1.5's)")
    p.add_argument("--resolution", type=int, default=512, help="image side the models default to (default 512)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="weights' dtype")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed of the weights (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a layout this script wrote before")
    args = p.parse_args(argv)

    from natgrad_diffusion.sampling.sd_layout import LAYOUT_FILE, write_sd15_layout

    start = time.perf_counter()
    print(f"building the SD v1.5 layout (width {args.width:g}, {args.resolution} px, {args.dtype}, seed {args.seed}) "
          f"with RANDOM weights ...", flush=True)  # fmt: skip
    try:
        out = write_sd15_layout(args.out, width=args.width, resolution=args.resolution, seed=args.seed,
                                dtype=getattr(torch, args.dtype), overwrite=args.overwrite)  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        print(f"make_sd15_layout: error: {exc}", file=sys.stderr)
        return 2
    record = json.loads((out / LAYOUT_FILE).read_text(encoding="utf-8"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    counts = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in record["parameters"].items())
    print(f"wrote {out} ({size / 1e9:.2f} GB; {counts} parameters) in {time.perf_counter() - start:.0f} s.\n"
          f"The weights are RANDOM (not a trained model): use it for speed and memory only, e.g.\n"
          f"  natgrad-diffusion train --model {out} --mode LORA_UNET --features resnet18 --reference mars")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
