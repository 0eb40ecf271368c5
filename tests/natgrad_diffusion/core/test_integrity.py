"""The checkpoint's checksum and the exported policy's manifest: every damage is refused with one line naming the
file, an intact file passes, and a checkpoint written before checksums is still read."""

import io
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.core.integrity import (
    CHECKPOINT_MAGIC,
    MANIFEST_FILE,
    IntegrityError,
    manifest_files,
    seal,
    unseal,
    verify_manifest,
    write_manifest,
)


def torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


PAYLOAD = torch_bytes({"version": 1, "policy": {"w": torch.arange(64.0)}})
SEALED = seal(PAYLOAD)


def test_seal_round_trips_and_starts_with_the_header():
    assert SEALED.startswith(CHECKPOINT_MAGIC) and len(SEALED) == len(CHECKPOINT_MAGIC) + 32 + len(PAYLOAD)
    assert unseal(SEALED, "ckpt") == (PAYLOAD, True)


@given(st.integers(0, len(SEALED) - 1), st.integers(1, 255))
def test_any_changed_byte_is_refused(offset, mask):
    data = bytearray(SEALED)
    data[offset] ^= mask
    with pytest.raises(IntegrityError, match="ckpt") as info:
        unseal(bytes(data), "ckpt")
    assert "\n" not in str(info.value)


@given(st.integers(0, len(SEALED) - 1))
def test_any_truncation_is_refused(length):
    with pytest.raises(IntegrityError, match=r"empty|truncated|corrupted"):
        unseal(SEALED[:length], "ckpt")


def test_what_is_refused_is_named():
    with pytest.raises(IntegrityError, match="ckpt is empty"):
        unseal(b"", "ckpt")
    with pytest.raises(IntegrityError, match="not a natgrad-diffusion checkpoint"):
        unseal(b"my notes\n", "ckpt")
    with pytest.raises(IntegrityError, match="truncated"):
        unseal(CHECKPOINT_MAGIC[:5], "ckpt")


def test_a_checkpoint_written_before_checksums_is_read_unchecked():
    assert unseal(PAYLOAD, "ckpt") == (PAYLOAD, False)


def policy_dir(tmp_path):
    d = tmp_path / "policy"
    d.mkdir()
    (d / "natgrad_policy.json").write_text('{"mode": "LORA_UNET"}')
    (d / "weights.safetensors").write_bytes(bytes(range(256)))
    write_manifest(d)
    return d


def test_manifest_lists_every_file_and_verifies(tmp_path):
    d = policy_dir(tmp_path)
    assert sorted(manifest_files(d)) == sorted(["natgrad_policy.json", "weights.safetensors", MANIFEST_FILE])
    assert verify_manifest(d) is True
    (d / "README.txt").write_text("a file of the user's is not checked")
    assert verify_manifest(d) is True
    assert verify_manifest(tmp_path) is False and manifest_files(tmp_path) is None  # no manifest


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "weights.safetensors").write_bytes(bytes(range(255)) + b"\x00"), "weights.safetensors is corr"),
        (lambda d: (d / "weights.safetensors").write_bytes(b""), "weights.safetensors is corrupted"),
        (lambda d: (d / "natgrad_policy.json").unlink(), "natgrad_policy.json is missing"),
        (lambda d: (d / MANIFEST_FILE).write_text("{half"), "is not a policy manifest"),
        (lambda d: (d / MANIFEST_FILE).write_text(json.dumps({"sha256": {"../x": "0"}})), "not a table of file"),
        (lambda d: (d / MANIFEST_FILE).write_text(json.dumps({"files": []})), "is not a policy manifest"),
    ],
    ids=["flipped", "emptied", "deleted", "manifest-garbage", "manifest-path", "manifest-foreign"],
)
def test_a_damaged_policy_is_refused(tmp_path, damage, message):
    d = policy_dir(tmp_path)
    damage(d)
    with pytest.raises(IntegrityError, match=message):
        verify_manifest(d)
