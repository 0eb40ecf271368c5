"""A run's evaluation text: what was compared with what, how many held-out images, and why a row repeats another."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.data.references import ReferenceData
from natgrad_diffusion.evaluation.metrics import Spaces
from natgrad_diffusion.evaluation.run_evaluation import RunEvaluation


def _evaluation(mode: str, held_out: np.ndarray | None) -> RunEvaluation:
    config = replace(TRAINING, mode=mode, reference="render")
    spaces = Spaces(["crater"], {"crater": lambda x: x}, {"crater": np.zeros((3, 2))}, held_out)
    ev = RunEvaluation(config, Path("unused"), None, spaces, ReferenceData(config, (1, 32, 32)), train_prompts=["a"],
                       eval_prompts=["a", "b"], reward_extractor=lambda x: x, reference_info={"source": "generated"})  # fmt: skip
    ev.rows = {"pretrained": {"crater/mmd2": 0.5}, "initial policy": {"crater/mmd2": 0.5}}
    return ev


def test_the_text_names_the_held_out_count_and_why_lora_repeats_the_pretrained_row():
    text = _evaluation("LORA_UNET", np.zeros((62, 32, 32), np.uint8)).text()
    assert "against 62 held-out images (render, evaluation split)" in text and "62's" not in text
    assert "its row repeats the pretrained row" in text
    assert "| pretrained |" in text and "| initial policy |" in text
    other = _evaluation("DIVERSITY_POLICY", None).text()
    assert "repeats the pretrained row" not in other and "held-out images of the reward's reference" in other
