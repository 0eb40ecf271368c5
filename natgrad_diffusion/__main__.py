"""``python -m natgrad_diffusion ...`` = the ``natgrad-diffusion`` console script (also under ``torchrun -m``)."""

from natgrad_diffusion.cli.app import main

if __name__ == "__main__":
    main()
