"""Train the crater judges (crater presence, crater size) and write the weights the package ships.

    python scripts/train_judges.py --out natgrad_diffusion/assets/crater-judges --threads 1

The judges (:mod:`natgrad_diffusion.evaluation.judges`) are small CNNs trained on the real crops of the tile's reference region
(:mod:`natgrad_diffusion.data.craters.mars_regions`) and validated on the validation region; ``judges.json`` records the
validation figures.  Neither the supervised stage nor the RL stage ever sees them: they only judge.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from natgrad_diffusion.evaluation.judges import save_crater_judges, train_crater_judges


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    judges = train_crater_judges(seed=args.seed, epochs=args.epochs)
    save_crater_judges(judges, args.out)
    print(json.dumps(judges.validation))


if __name__ == "__main__":
    main()
