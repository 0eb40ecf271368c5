"""The ``natgrad-diffusion`` command line: the parser (:mod:`.app`), the subcommands, config files and the checks of
output paths."""

from ..moved import lazy_exports

# the names of the module this package replaced (natgrad_diffusion.cli, before the pipeline subpackages)
__getattr__, __all__ = lazy_exports(__name__, {"app": ['build_parser', 'load_config_file', 'main', 'training_config']})
