"""Stage 1: the supervised denoising fine-tune on real crops (:mod:`.stage`), which writes a diffusers folder
``--model`` takes."""

from ..moved import lazy_exports

# the names of the module this package replaced (natgrad_diffusion.supervised, before the pipeline subpackages)
__getattr__, __all__ = lazy_exports(__name__, {"stage": ['SUPERVISED_FILE', 'SupervisedError', 'SupervisedResult', 'check_supervised_dir', 'finetune', 'is_supervised_dir', 'model_images', 'training_set']})
