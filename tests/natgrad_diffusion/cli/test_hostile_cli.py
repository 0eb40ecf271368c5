"""Hostile inputs of the diffusion side (issue 19): CLI flags at their edges, config files, run.json on resume, prompt
files, image folders, reference and features ``.npz`` files, and what ``main`` does with every exception.

Each :class:`~tests.hostile.Case` is labelled with its class on the code before issue 19 (``before=``, measured with
``--hostile-report``); the test asserts that it is now handled or refused with one line naming the problem.  Cases
that must run use ``--test-mode --episodes 0 --no-evaluate --threads 1`` (a few seconds) or call the library
functions; most are refused before any model loads.  ``size_60000`` (``build-reference --size 60000``) tried to
allocate 54 GiB on the old code: it was not run there, its label is the issue's (a traceback).
"""

from __future__ import annotations

import importlib.abc
import json
import struct
import sys
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from tests.hostile import HANDLED, NAMED, SILENT, TRACEBACK, UNNAMED, Case, Escaped, cli

FAST = ("--test-mode", "--episodes", "0", "--no-evaluate", "--threads", "1", "--no-progress")
HUGE = str(2**70)


# ------------------------------------------------------------------------------------------------------------ helpers
def train(*argv: object, fast: tuple[str, ...] = FAST):
    """``act``: ``natgrad-diffusion train --out TMP/run FAST ARGV``."""
    return lambda tmp: cli("train", "--out", tmp / "run", *fast, *argv)


def with_config(name: str, text: str | bytes, *argv: object, fast: tuple[str, ...] = FAST):
    """``act``: write the config file ``TMP/name`` and train with it."""

    def act(tmp: Path) -> str:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return cli("train", "--out", tmp / "run", "--config", path, *fast, *argv)

    return act


def json_config(data: object, *argv: object, fast: tuple[str, ...] = FAST):
    return with_config("settings.json", json.dumps(data), *argv, fast=fast)


def resumed(changes: dict, *argv: object):
    """``act``: a directory whose ``run.json`` holds a configuration with ``changes``, resumed."""

    def act(tmp: Path) -> str:
        return cli("train", "--resume", "--out", run_dir(tmp, **changes), *FAST, *argv)

    return act


def run_dir(tmp: Path, **changes: object) -> Path:
    """A run directory whose ``run.json`` holds a configuration with ``changes`` (and nothing else)."""
    from natgrad_diffusion.core.config import TRAINING, config_dict

    run = tmp / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {**config_dict(TRAINING), "out": str(run), **changes}}))
    return run


def png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an image (its dtype and shape choose the mode: uint16 is 16-bit, 4 channels RGBA)."""
    Image.fromarray(array).save(path)
    return path


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header announces ``width × height`` pixels (8-bit grayscale) and holds no image data: what a
    huge image looks like to whoever reads its header first, in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def folder(files: dict[str, object]):
    """``act``: build a reference set from a folder of ``files`` (name → array, bytes or a writer)."""

    def act(tmp: Path) -> str:
        root = tmp / "images"
        root.mkdir()
        for name, content in files.items():
            if isinstance(content, bytes):
                (root / name).write_bytes(content)
            elif callable(content):
                content(root / name)
            else:
                png(root / name, content)
        return cli("build-reference", tmp / "ref.npz", "--source", "folder", "--folder", root, "--size", 16)

    return act


def reference_images(tmp: Path) -> np.ndarray:
    with np.load(tmp / "ref.npz") as z:
        return z["images"]


def truncated_png(path: Path) -> None:
    png(path, noise((64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def float_tiff(values: np.ndarray):
    def write(path: Path) -> None:
        Image.fromarray(values.astype(np.float32)).save(path)

    return write


def reference_npz(tmp: Path, images: np.ndarray, name: str = "ref.npz") -> Path:
    from natgrad_diffusion.data.craters.reference import ReferenceSet, save_reference_set

    return save_reference_set(ReferenceSet(images, ["a crater"] * len(images)), tmp / name)


def features_npz(tmp: Path, features: np.ndarray, name: str = "feats.npz") -> Path:
    meta = json.dumps({"name": "pixels", "dim": features.shape[-1], "image_size": 16})
    np.savez(tmp / name, features=features, captions=np.array(["a crater"] * len(features)),
             extractor=np.array(meta), reference=np.array("{}"), version=np.array(1))  # fmt: skip
    return tmp / name


def prompts_file(content: bytes):
    """``act``: load the prompts file holding ``content``; returns the prompts."""

    def act(tmp: Path) -> list[str]:
        from natgrad_diffusion.data.prompts import load_prompts

        (tmp / "prompts.txt").write_bytes(content)
        return load_prompts(tmp / "prompts.txt")

    return act


def train_with_prompts(content: bytes):
    def act(tmp: Path) -> str:
        (tmp / "prompts.txt").write_bytes(content)
        return cli("train", "--out", tmp / "run", *FAST, "--prompts", tmp / "prompts.txt")

    return act


def train_raising(exc: BaseException, *argv: str):
    """``act``: ``train`` whose work raises ``exc`` (what a library error deep in a run looks like to ``main``)."""

    def act(tmp: Path) -> str:
        with mock.patch("natgrad_diffusion.training.loop.run_prepared", side_effect=exc):
            return cli(*argv, "train", "--out", tmp / "run", *FAST)

    return act


def nonfinite(message: str) -> BaseException:
    from natgrad.trust_region import NonFiniteError

    return NonFiniteError(message)


class _Interrupt(importlib.abc.MetaPathFinder):
    """Raises ``KeyboardInterrupt`` when ``name`` is imported: Ctrl-C while the command line imports its modules."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


def interrupted_import(name: str, *argv: object):
    def act(tmp: Path) -> str:
        saved = {k: v for k, v in sys.modules.items() if k == name or k.startswith(name + ".")}
        for key in saved:
            del sys.modules[key]
        parent, _, child = name.rpartition(".")
        attr = getattr(sys.modules.get(parent), child, None)
        if attr is not None:
            delattr(sys.modules[parent], child)
        finder = _Interrupt(name)
        sys.meta_path.insert(0, finder)
        try:
            return cli(*argv)
        finally:
            sys.meta_path.remove(finder)
            sys.modules.update(saved)
            if attr is not None:
                setattr(sys.modules[parent], child, attr)

    return act


def interrupted_parse(*argv: object):
    def act(tmp: Path) -> str:
        with mock.patch("natgrad_diffusion.cli.app.build_parser", side_effect=KeyboardInterrupt):
            return cli(*argv)

    return act


def debug_traceback(tmp: Path) -> str:
    """With ``--debug`` the traceback is shown: the exception escapes ``main``."""
    with mock.patch("natgrad_diffusion.training.loop.run_prepared", side_effect=nonfinite("the loss is nan")):
        try:
            cli("--debug", "train", "--out", tmp / "run", *FAST)
        except Escaped as exc:
            return f"escaped: {exc}"
    return "no traceback"


def sample(*argv: object):
    return lambda tmp: cli("sample", "--out", tmp / "s.png", *argv)


def build_features(make_input, *argv: object):
    def act(tmp: Path) -> str:
        return cli("build-features", make_input(tmp), tmp / "out.npz", *argv)

    return act


def plot_features(make_input):
    return lambda tmp: cli("plot-features", make_input(tmp), "--out-dir", tmp / "plots")


def ran(result: object, tmp: Path) -> bool:
    return isinstance(result, str) and (tmp / "run" / "train.csv").exists()


def ref3(tmp: Path) -> Path:
    return reference_npz(tmp, noise((3, 32, 32)))


def load_config(name: str, text: bytes):
    def act(tmp: Path) -> dict:
        from natgrad_diffusion.cli.app import load_config_file

        (tmp / name).write_bytes(text)
        return load_config_file(tmp / name)

    return act


# -------------------------------------------------------------------------------------------------------------- cases
# fmt: off
GOOD_IMAGES = {"a.png": noise((20, 24), 1), "b.png": noise((16, 16), 2)}

CASES = [
    # -- 6: types at every entry point (config files, run.json on resume, JSON-valued flags) --------------------------
    Case("cfg_test_mode_string_no", "6 types", SILENT,
         json_config({"test_mode": "no"}, fast=("--episodes", "0", "--no-evaluate", "--threads", "1")),
         refuses=["test_mode", "'no'", "true or false"]),
    Case("cfg_critic_string_false", "6 types", SILENT, json_config({"critic": "false"}),
         refuses=["critic", "'false'"]),
    Case("cfg_critic_int_one", "6 types", SILENT, json_config({"critic": 1}), refuses=["critic", "true or false"]),
    Case("cfg_toml_line_search_no", "6 types", SILENT,
         with_config("settings.toml", '[trust_region]\nline_search = "no"\n'), refuses=["line_search", "'no'"]),
    Case("cfg_flat_line_search_false", "6 types", SILENT, json_config({"line_search": "False"}),
         refuses=["line_search", "'False'"]),
    Case("cfg_guidance_string_number", "12 unnamed", UNNAMED, json_config({"guidance_scale": "3"}),
         refuses=["guidance_scale", "'3'"]),
    Case("cfg_toml_max_kl_string", "12 unnamed", NAMED,
         with_config("settings.toml", '[trust_region]\nmax_kl = "0.05"\n'), refuses=["max_kl", "'0.05'"]),
    Case("cfg_eta_string", "12 unnamed", UNNAMED, json_config({"eta": "0.5"}, "--mode", "LORA_UNET"),
         refuses=["eta", "'0.5'"]),
    Case("cfg_ppo_lr_string", "6 types", NAMED, json_config({"ppo": {"lr": "1e-3"}}), refuses=["lr", "'1e-3'"]),
    Case("cfg_chunk_string", "6 types", NAMED, json_config({"chunks": {"grad_chunk": "8"}}),
         refuses=["grad_chunk", "'8'"]),
    Case("cfg_eval_features_string", "new", UNNAMED, json_config({"eval_features": "pixels"}),
         refuses=["eval_features", "'pixels'"]),
    Case("cfg_seed_float", "new", UNNAMED, json_config({"seed": 1.5}), refuses=["seed", "1.5", "integer"]),
    Case("cfg_prompts_number", "new", UNNAMED, json_config({"prompts": 5}), refuses=["prompts", "5", "string"]),
    Case("cfg_max_kl_bounds_string", "12 unnamed", UNNAMED, json_config({"max_kl_bounds": "[1e-4, 0.1]"}),
         refuses=["max_kl_bounds", "list"]),
    Case("cfg_reward_options_list", "6 types", NAMED, json_config({"reward_options": [1, 2]}),
         refuses=["reward_options", "mapping"]),
    Case("cfg_group_not_mapping", "6 types", NAMED, json_config({"chunks": 5}), refuses=["chunks", "mapping"]),
    Case("cfg_unknown_nested_key", "6 types", NAMED, json_config({"trust_region": {"max_kll": 0.1}}),
         refuses=["max_kll"]),
    Case("cfg_unknown_key", "6 types", NAMED, json_config({"episodez": 3}), refuses=["episodez"]),
    Case("cfg_json_syntax_error", "new", NAMED, with_config("settings.json", '{"seed": 1,,}'),
         refuses=["settings.json", "line 1"]),
    Case("cfg_toml_syntax_error", "new", NAMED, with_config("settings.toml", "seed = = 3\n"),
         refuses=["settings.toml", "line 1"]),
    Case("cfg_top_level_list", "new", NAMED, with_config("settings.json", "[1, 2]"), refuses=["settings.json"]),
    Case("cfg_directory", "new", UNNAMED,
         lambda tmp: cli("train", "--out", tmp / "run", "--config", tmp, *FAST), refuses=["is a directory"]),
    Case("cfg_yaml_file", "new", UNNAMED, with_config("settings.yaml", "seed: 3\n"),
         refuses=["settings.yaml", "JSON", "TOML"]),
    Case("cfg_invalid_utf8", "12 unnamed", UNNAMED, with_config("settings.json", b'{"negative_prompt": "\xff"}'),
         refuses=["settings.json", "UTF-8"]),
    Case("cfg_keys_outside_train_table", "new", SILENT,
         with_config("settings.toml", "seed = 3\n[train]\nguidance_scale = 3.0\n"), refuses=["seed", "[train]"]),
    Case("cfg_train_table_not_table", "new", UNNAMED, json_config({"train": 5}), refuses=["[train]", "5"]),
    Case("cfg_json_repeated_key", "new", SILENT, with_config("settings.json", '{"seed": 1, "guidance_scale": 3, "seed": 2}'),
         refuses=["settings.json", "seed given more than once"]),
    Case("cfg_json_nan_damping", "new", NAMED, with_config("settings.json", '{"damping": NaN}'), refuses=["damping", "nan"]),
    Case("cfg_toml_huge_seed", "new", UNNAMED, with_config("settings.toml", "seed = 99999999999999999999\n"),
         refuses=["seed", "99999999999999999999"]),
    Case("cfg_json_bom", "new", UNNAMED, load_config("settings.json", '\ufeff{"guidance_scale": 3.0}'.encode()),
         check=lambda result, tmp: result == {"guidance_scale": 3.0}),
    Case("resume_run_json_string_bool", "6 types", SILENT, resumed({"critic": "no"}),
         refuses=["run.json", "critic", "'no'"]),
    Case("resume_run_json_string_number", "12 unnamed", UNNAMED, resumed({"guidance_scale": "2"}),
         refuses=["run.json", "guidance_scale", "'2'"]),
    Case("flag_reward_option_string", "6 types", UNNAMED, train("--reward-options", '{"w_vendi": "0.5"}'),
         refuses=["reward_options", "w_vendi", "'0.5'"]),
    Case("flag_reward_option_unknown", "new", UNNAMED, train("--reward-options", '{"nope": 1}'),
         refuses=["reward_options", "nope", "w_mmd"]),
    Case("flag_policy_option_string", "6 types", NAMED, train("--policy-options", '{"rank": "8"}'),
         refuses=["policy_options", "rank", "'8'"]),
    Case("flag_policy_option_unknown", "new", UNNAMED, train("--policy-options", '{"rnk": 8}'),
         refuses=["policy_options", "rnk", "rank"]),
    Case("flag_max_kl_bounds_one_value", "12 unnamed", UNNAMED, train("--max-kl-bounds", "[1e-4]"),
         refuses=["max_kl_bounds", "2 values"]),
    Case("flag_max_kl_bounds_object", "12 unnamed", UNNAMED, train("--max-kl-bounds", '{"low": 1e-4}'),
         refuses=["max_kl_bounds", "list"]),
    Case("flag_max_kl_bounds_strings", "12 unnamed", UNNAMED, train("--max-kl-bounds", '["a", "b"]'),
         refuses=["max_kl_bounds", "'a'"]),
    Case("flag_max_kl_bounds_not_json", "12 unnamed", NAMED, train("--max-kl-bounds", "1e-4,0.1"),
         refuses=["--max-kl-bounds", "JSON"]),
    # -- 7: inputs with which a run silently does nothing ----------------------------------------------------------
    Case("max_kl_1e30", "7 silent", SILENT, train("--max-kl", "1e30"), refuses=["max_kl", "1e+30", "10"]),
    Case("max_kl_1e-30", "7 silent", SILENT, train("--max-kl", "1e-30"), refuses=["max_kl", "1e-30", "1e-06"]),
    Case("max_kl_bounds_1e30", "7 silent", SILENT, train("--adaptive", "--max-kl-bounds", "[1e-4, 1e30]"),
         refuses=["max_kl_bounds", "1e+30"]),
    Case("guidance_1e30", "7 silent", SILENT, train("--guidance-scale", "1e30"),
         refuses=["guidance_scale", "1e+30", "50"]),
    Case("guidance_inf", "7 silent", SILENT, train("--guidance-scale", "inf"), refuses=["guidance_scale", "inf"]),
    Case("damping_inf", "7 silent", SILENT, train("--damping", "inf"), refuses=["damping", "inf"]),
    Case("ppo_lr_inf", "7 silent", SILENT, train("--algorithm", "ppo", "--ppo-lr", "inf"),
         refuses=["lr", "inf", "finite"]),
    Case("ppo_clip_nan", "new", NAMED, train("--algorithm", "ppo", "--ppo-clip-range", "nan"),
         refuses=["clip_range", "nan"]),
    Case("folder_one_image", "7 silent", SILENT, folder({"a.png": noise((16, 16))}),
         refuses=["1 image", "at least 2"]),
    Case("folder_nan_tiff", "7 silent", SILENT,
         folder({**GOOD_IMAGES, "c.tif": float_tiff(np.full((16, 16), np.nan))}), refuses=["c.tif", "NaN"]),
    Case("folder_inf_tiff", "7 silent", SILENT,
         folder({**GOOD_IMAGES, "c.tif": float_tiff(np.where(np.eye(16) > 0, np.inf, 0.5))}),
         refuses=["c.tif", "infinite"]),
    Case("prompts_bom", "7 silent", SILENT, prompts_file("\ufeffa small crater\nthree craters\n".encode()),
         check=lambda result, tmp: result == ["a small crater", "three craters"]),
    Case("prompts_crlf", "new", HANDLED, prompts_file(b"a small crater\r\nthree craters\r\n"),
         check=lambda result, tmp: result == ["a small crater", "three craters"]),
    Case("prompts_control_bytes", "new", SILENT, prompts_file(b"a crater\x00\x01\x02\nok\n"),
         refuses=["prompts.txt", "line 1", "control"]),
    Case("prompts_huge_line", "new", SILENT, prompts_file(b"crater " * 20000 + b"\n"),
         refuses=["prompts.txt", "line 1", "139999", "1000"]),
    Case("prompts_png_bytes", "new", NAMED, train_with_prompts(b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
         refuses=["prompts.txt", "UTF-8"]),
    Case("prompts_directory", "new", UNNAMED,
         lambda tmp: cli("train", "--out", tmp / "run", *FAST, "--prompts", tmp), refuses=["is a directory"]),
    Case("prompts_empty", "new", NAMED, train_with_prompts(b"\n \n"), refuses=["prompts.txt", "empty"]),
    Case("sample_empty_prompt", "new", SILENT, sample("--prompt", "", "--steps", "2"),
         refuses=["--prompt", "empty"]),
    # -- 9: bad numbers end in one line ----------------------------------------------------------------------------
    Case("eta_1.2", "9 traceback", TRACEBACK, train("--eta", "1.2", "--episodes", "1"),
         refuses=["eta", "1.2", "[0, 1]"]),
    Case("eta_inf_scheduler", "9 traceback", SILENT, train("--eta", "inf", "--mode", "SCHEDULER_POLICY"),
         refuses=["eta", "inf"]),
    Case("nonfinite_error_one_line", "9 traceback", TRACEBACK,
         train_raising(nonfinite("the loss is nan; parameters were left untouched")),
         refuses=["the loss is nan", "--debug"]),
    Case("memory_error_one_line", "9 traceback", TRACEBACK, train_raising(MemoryError()), refuses=["out of memory"]),
    Case("internal_error_one_line", "9 traceback", TRACEBACK, train_raising(KeyError("reward_value")),
         refuses=["KeyError", "reward_value", "--debug"]),
    Case("debug_shows_the_traceback", "9 traceback", HANDLED, debug_traceback,
         check=lambda result, tmp: result.startswith("escaped: NonFiniteError")),
    # -- 11: huge inputs, Ctrl-C --------------------------------------------------------------------------------------
    Case("folder_20000px_image", "11 traceback", TRACEBACK,
         folder({**GOOD_IMAGES, "huge.png": lambda p: png_header_only(p, 20000, 20000)}),
         refuses=["huge.png", "20000×20000"]),
    Case("size_60000", "11 traceback", TRACEBACK, lambda tmp: cli("build-reference", tmp / "r.npz", "--size", 60000),
         refuses=["--size", "60000", "1024"]),
    Case("ctrl_c_importing_commands", "11 traceback", TRACEBACK,
         interrupted_import("natgrad_diffusion.cli.commands", "plot", "--run", "nowhere"), refuses=["interrupted"]),
    Case("ctrl_c_building_the_parser", "11 traceback", TRACEBACK, interrupted_parse("plot", "--run", "nowhere"),
         refuses=["interrupted"]),
    # -- 12: one line that names the field or file, the value and what is accepted ---------------------------------
    Case("seed_2_70", "12 unnamed", UNNAMED, train("--seed", HUGE), refuses=["seed", HUGE, "4294967295"]),
    Case("reference_seed_negative", "new", UNNAMED, train("--reference", "render", "--reference-seed", "-1"),
         refuses=["reference_seed", "-1"]),
    Case("eval_seed_2_70", "12 unnamed", SILENT, train("--eval-seed", HUGE), refuses=["eval_seed", HUGE]),
    Case("sample_seed_2_70", "12 unnamed", UNNAMED, sample("--prompt", "a crater", "--seed", HUGE, "--steps", "2"),
         refuses=["--seed", HUGE]),
    Case("sample_steps_100000", "new", UNNAMED, sample("--prompt", "a crater", "--steps", "100000"),
         refuses=["--steps", "100000", "1000"]),
    Case("train_steps_5000", "new", SILENT, train("--steps", "5000"), refuses=["steps", "5000", "1000"]),
    Case("folder_undecodable_caption", "12 unnamed", UNNAMED, folder({**GOOD_IMAGES, "a.txt": b"\xff\xfe crat\xe8re"}),
         refuses=["a.txt", "UTF-8"]),
    Case("folder_truncated_png", "12 unnamed", UNNAMED, folder({**GOOD_IMAGES, "cut.png": truncated_png}),
         refuses=["cut.png", "truncated"]),
    Case("folder_random_bytes_png", "new", NAMED, folder({**GOOD_IMAGES, "junk.png": bytes(range(256)) * 4}),
         refuses=["junk.png"]),
    Case("folder_empty", "new", NAMED, folder({}), refuses=["no png"]),
    Case("folder_only_text", "new", NAMED, folder({"notes.txt": b"hello"}), refuses=["no png"]),
    Case("folder_is_a_file", "new", NAMED,
         lambda tmp: cli("build-reference", tmp / "r.npz", "--source", "folder", "--folder", ref3(tmp)),
         refuses=["ref.npz"]),
    Case("folder_mixed_images", "new", HANDLED,
         folder({"gray.png": noise((40, 20)), "rgb.png": noise((30, 30, 3)), "rgba.png": noise((16, 16, 4)),
                 "deep.png": lambda p: png(p, noise((24, 24)).astype(np.uint16) * 257),
                 "float.tif": float_tiff(np.linspace(0, 1, 256).reshape(16, 16)),
                 "pal.png": lambda p: Image.fromarray(noise((16, 16, 3))).convert("P").save(p),
                 "sub.png": lambda p: p.mkdir()}),
         check=lambda result, tmp: len(reference_images(tmp)) == 6 and all(im.std() > 0 for im in reference_images(tmp))),
    Case("reference_is_directory", "new", UNNAMED, train("--reference", "."), refuses=["is a directory"]),
    Case("reference_one_image", "new", UNNAMED, lambda tmp: train("--reference", reference_npz(tmp, noise((1, 32, 32))))(tmp),
         refuses=["ref.npz", "1 image", "at least 2"]),
    Case("reference_float_images", "new", NAMED,
         lambda tmp: train("--reference", _npz(tmp, images=np.zeros((3, 32, 32), np.float32), captions=np.array(["a"] * 3),
                                             params=np.array([""] * 3), meta=np.array("{}"), version=np.array(1)))(tmp),
         refuses=["ref.npz", "uint8"]),
    Case("reference_wrong_keys", "new", NAMED, lambda tmp: train("--reference", _npz(tmp, pictures=np.zeros(3)))(tmp),
         refuses=["ref.npz", "missing"]),
    Case("reference_features_nan", "new", UNNAMED,
         lambda tmp: train("--reference", features_npz(tmp, np.full((4, 128), np.nan, np.float32)))(tmp),
         refuses=["feats.npz", "NaN"]),
    Case("reference_features_one_row", "new", NAMED,
         lambda tmp: train("--reference", features_npz(tmp, np.ones((1, 128), np.float32)))(tmp),
         refuses=["feats.npz", "at least 2"]),
    Case("build_features_unknown_extractor", "new", NAMED, build_features(ref3, "--extractor", "nope"),
         refuses=["nope", "resnet18"]),
    Case("build_features_image_size_zero", "new", NAMED, build_features(ref3, "--extractor", "pixels", "--image-size", 0),
         refuses=["--image-size", "0"]),
    Case("build_features_from_features", "new", NAMED,
         build_features(lambda tmp: features_npz(tmp, np.ones((3, 4), np.float32)), "--extractor", "pixels"),
         refuses=["feats.npz", "missing"]),
    Case("plot_features_on_reference", "new", NAMED, plot_features(ref3), refuses=["ref.npz", "missing"]),
    Case("plot_features_one_row", "new", SILENT,
         plot_features(lambda tmp: features_npz(tmp, np.ones((1, 4), np.float32))), refuses=["feats.npz", "at least 2"]),
    Case("plot_features_nan", "new", UNNAMED,
         plot_features(lambda tmp: features_npz(tmp, np.full((5, 4), np.nan, np.float32))), refuses=["feats.npz", "NaN"]),
    # -- edges of the train flags (0, negative, NaN, inf, wrong type) -------------------------------------------------
    Case("batch_size_zero", "new", NAMED, train("--batch-size", "0"), refuses=["batch_size", "0"]),
    Case("episodes_negative", "new", NAMED, train("--episodes", "-1"), refuses=["episodes", "-1"]),
    Case("episodes_word", "new", NAMED, train("--episodes", "three"), refuses=["--episodes", "three"]),
    Case("threads_zero", "new", NAMED, train("--threads", "0"), refuses=["threads", "0"]),
    Case("cg_iters_zero", "new", NAMED, train("--cg-iters", "0"), refuses=["cg_iters", "0"]),
    Case("backtrack_coeff_one", "new", NAMED, train("--backtrack-coeff", "1"), refuses=["backtrack_coeff", "1"]),
    Case("max_kl_nan", "new", NAMED, train("--max-kl", "nan"), refuses=["max_kl", "nan"]),
    Case("max_kl_word", "new", NAMED, train("--max-kl", "big"), refuses=["--max-kl", "big"]),
    Case("fvp_subsample_nan", "new", NAMED, train("--fvp-subsample", "nan"), refuses=["fvp_subsample", "nan"]),
    Case("decision_subsample_zero", "new", NAMED, train("--decision-subsample", "0"),
         refuses=["decision_subsample", "0"]),
    Case("reference_diversity_nan", "new", NAMED, train("--reference", "render", "--reference-diversity", "nan"),
         refuses=["reference_diversity", "nan"]),
    Case("eval_max_prompts_zero", "new", NAMED, train("--eval-max-prompts", "0"), refuses=["eval_max_prompts", "0"]),
    Case("feature_image_size_zero", "new", NAMED, train("--feature-image-size", "0"),
         refuses=["feature_image_size", "0"]),
    Case("grid_every_negative", "new", NAMED, train("--grid-every", "-3"), refuses=["grid_every", "-3"]),
    Case("eta_negative", "new", NAMED, train("--eta", "-0.5"), refuses=["eta", "-0.5"]),
    Case("guidance_below_one", "new", NAMED, train("--guidance-scale", "0.5"), refuses=["guidance_scale", "0.5"]),
    Case("test_mode_runs", "new", HANDLED, train(), check=ran),
    Case("algorithm_upper_case", "new", NAMED, train("--algorithm", "TRPO"), refuses=["algorithm", "'TRPO'", "trpo"]),
    Case("reward_lower_case", "new", HANDLED, train("--reward", "mmd"), check=ran),
    Case("reference_wrong_size", "new", NAMED,
         lambda tmp: train("--reference", reference_npz(tmp, noise((3, 64, 64))))(tmp), refuses=["ref.npz", "64×64"]),
    # -- the other subcommands -------------------------------------------------------------------------------------
    Case("sample_images_per_prompt_zero", "new", NAMED, sample("--prompt", "a crater", "--images-per-prompt", "0"),
         refuses=["--images-per-prompt", "0"]),
    Case("sample_prompts_missing", "new", NAMED, lambda tmp: cli("sample", "--prompts", tmp / "none.txt"),
         refuses=["none.txt", "not found"]),
    Case("sample_prompt_too_long", "new", SILENT, sample("--prompt", "crater " * 300, "--steps", "2"),
         refuses=["--prompt", "2099 characters"]),
    Case("sample_run_json_string_bool", "6 types", UNNAMED, lambda tmp: cli("sample", "--run", run_dir(tmp, critic="no")),
         refuses=["run.json", "critic", "'no'"]),
    Case("evaluate_run_json_string_number", "12 unnamed", UNNAMED,
         lambda tmp: cli("evaluate", "--run", run_dir(tmp, guidance_scale="2")),
         refuses=["run.json", "guidance_scale", "'2'"]),
    Case("build_reference_crop_factor_nan", "new", NAMED,
         lambda tmp: cli("build-reference", tmp / "m", "--source", "mars", "--crop-factor", "nan"),
         refuses=["--crop-factor", "nan"]),
    Case("build_reference_n_one", "new", NAMED, lambda tmp: cli("build-reference", tmp / "r.npz", "--n", 1),
         refuses=["--n", "1"]),
    Case("build_reference_size_seven", "new", NAMED, lambda tmp: cli("build-reference", tmp / "r.npz", "--size", 7),
         refuses=["--size", "7"]),
    Case("build_reference_seed_negative", "new", UNNAMED,
         lambda tmp: cli("build-reference", tmp / "r.npz", "--seed", -1, "--n", 2, "--size", 8),
         refuses=["--seed", "-1"]),
    Case("build_reference_diversity_nan", "new", NAMED,
         lambda tmp: cli("build-reference", tmp / "r.npz", "--diversity", "nan"), refuses=["diversity", "nan"]),
]
# fmt: on


def _npz(tmp: Path, **arrays: np.ndarray) -> Path:
    np.savez(tmp / "ref.npz", **arrays)
    return tmp / "ref.npz"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case, hostile):
    hostile(case)
