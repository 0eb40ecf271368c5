"""A user's text file: UTF-8 with or without a byte-order mark; a directory, a missing file or other bytes are one
line naming the file."""

import pytest

from natgrad_diffusion.core.textfile import read_text


class Refused(ValueError):
    pass


def test_utf8_with_a_bom_and_each_failure_named(tmp_path):
    good = tmp_path / "a.txt"
    good.write_bytes("\ufeffcrater ü\n".encode())
    assert read_text(good, "prompts file") == "crater ü\n"
    latin = tmp_path / "b.txt"
    latin.write_bytes("cr\xe2ter".encode("latin-1"))
    cases = [(tmp_path, "is a directory; give X"), (tmp_path / "none.txt", "not found"),
             (latin, r"is not UTF-8 text \(byte 0xe2 at offset 2\); save as UTF-8")]  # fmt: skip
    for path, message in cases:
        with pytest.raises(Refused, match=message) as info:
            read_text(path, "prompts file", Refused, if_directory="; give X", if_not_utf8="; save as UTF-8")
        assert str(path) in str(info.value) and "\n" not in str(info.value)
