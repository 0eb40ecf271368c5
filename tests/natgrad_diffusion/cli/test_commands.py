"""The subcommands act on parsed arguments: a combination the parser cannot see is refused with a ValueError that
names the options (``main`` prints it as one line), before any file is written or any model loads."""

import pytest

from natgrad_diffusion.cli.app import build_parser
from natgrad_diffusion.cli.commands import COMMANDS


def run(argv):
    args = build_parser().parse_args(argv)
    COMMANDS[args.command](args)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["build-reference", "{tmp}/r.npz", "--crop-factor", "2"], "apply to --source mars only"),
        (["build-reference", "{tmp}/r.npz", "--source", "folder"], "--source folder needs --folder DIR"),
        (["build-reference", "{tmp}/out", "--source", "mars", "--crop-factor", "0.5"], "--crop-factor must be >= 1"),
        (["build-reference", "{tmp}/r.npz", "--source", "mars"], "OUT must be a directory"),
        (["build-reference", "{tmp}/r.npz", "--diversity", "wild"], "reference_diversity must be one of"),
        (["build-features", "{tmp}/none.npz", "{tmp}/f.npz"], "reference file .* not found"),
        (["plot-features", "{tmp}/f.npz", "--prefix", "a/b"], "must be a file name prefix"),
        (["supervise", "--out", "{tmp}/sup", "--data", "{tmp}/none.npz"], "--data .* not found"),
    ],
    ids=["crop_factor_render", "folder_missing", "crop_factor_small", "mars_needs_dir", "diversity", "features_ref",
         "prefix", "supervise_data"],
)
def test_combinations_the_parser_cannot_see_are_refused_naming_them(tmp_path, argv, says):
    with pytest.raises(ValueError, match=says) as info:
        run([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
