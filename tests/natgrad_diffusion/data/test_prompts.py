"""The job's prompt files and prompts: one line naming the file and line for a bad file; the prompts that go with
each reference."""

from dataclasses import replace

import pytest

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.data.prompts import MARS_PROMPTS, check_prompt, job_prompts, load_prompts


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfea crater\n", r"is not UTF-8 text \(byte 0xff at offset 0\)"),
        (b"a crater\nbad\x00line\n", "line 2 holds control characters"),
        (b"ok\n" + b"x" * 1001 + b"\n", "line 2 has 1001 characters; a prompt has at most 1000"),
    ],
    ids=["latin1", "nul", "long"],
)
def test_prompt_files_are_refused_naming_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_prompt_files_drop_a_bom_and_take_crlf_tabs_and_unicode(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffa crater\r\n\r\ncratère\tà l'ouest\r\n".encode())
    assert load_prompts(path) == ["a crater", "cratère\tà l'ouest"]
    with pytest.raises(TrainingError, match="is a directory"):
        load_prompts(tmp_path)


def test_the_prompts_follow_the_reference_unless_a_file_is_given(tmp_path):
    mars = job_prompts(replace(TRAINING, reference="mars"), "train")
    assert mars == load_prompts(MARS_PROMPTS["train"]) and all("crater" in p for p in mars)
    test = job_prompts(replace(TRAINING, reference="mars"), "test")
    assert len(test) == 12  # one per row of the evaluation grids
    rendered = job_prompts(replace(TRAINING, reference="render"), "train")
    assert rendered != mars
    given = tmp_path / "mine.txt"
    given.write_text("one crater\ntwo craters\n", encoding="utf-8")
    assert job_prompts(replace(TRAINING, reference="mars", prompts=str(given)), "train") == ["one crater", "two craters"]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("   ", "the prompt is empty"), ("a\x07crater", "holds control characters"), ("x" * 1001, "has 1001 characters")],
    ids=["blank", "bell", "long"],
)
def test_check_prompt_gives_one_line_naming_where(prompt, message):
    with pytest.raises(TrainingError, match=message) as info:
        check_prompt(prompt, "the prompt")
    assert "\n" not in str(info.value)


def test_check_prompt_strips_and_keeps_tabs():
    assert check_prompt("  a\tcrater \n") == "a\tcrater"
