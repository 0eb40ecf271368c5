"""Digests of what a run writes, so that damage is refused instead of resumed: the checkpoint's checksum and the
exported policy's manifest.

* ``checkpoint.pt`` is :data:`CHECKPOINT_MAGIC` (16 bytes), the SHA-256 digest of the payload (32 bytes), then the
  payload (the bytes of ``torch.save``).  :func:`seal` builds it, :func:`unseal` checks it: an empty, truncated or
  bit-flipped file, or another file renamed ``checkpoint.pt``, is refused with one line naming the file.  The file is
  still written in one atomic replace, so a kill during the write leaves the previous checkpoint.
* ``policy/natgrad_manifest.json`` (:data:`MANIFEST_FILE`) lists the SHA-256 of every file the policy export wrote
  (``{"format": 1, "sha256": {name: hexdigest}}``); :func:`verify_manifest` checks them before a policy is loaded.

Both are standard library only (the command line checks paths before importing torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "CHECKPOINT_MAGIC",
    "MANIFEST_FILE",
    "POLICY_FILE",
    "IntegrityError",
    "manifest_files",
    "seal",
    "sha256_file",
    "unseal",
    "verify_manifest",
    "write_manifest",
]

#: the first bytes of a checkpoint with a checksum (a ``torch.save`` zip starts with ``PK``)
CHECKPOINT_MAGIC = b"natgrad-ckpt-v1\n"
_DIGEST = 32  # bytes of a SHA-256 digest
#: the manifest of an exported policy
MANIFEST_FILE = "natgrad_manifest.json"
#: the configuration file of a saved policy (:meth:`natgrad_diffusion.sampling.policies.DiffusionPolicy.save`)
POLICY_FILE = "natgrad_policy.json"


class IntegrityError(ValueError):
    """A checkpoint or an exported policy is damaged (its bytes differ from those written)."""


def seal(payload: bytes) -> bytes:
    """``payload`` with its header and SHA-256 digest in front (the bytes of ``checkpoint.pt``)."""
    return CHECKPOINT_MAGIC + hashlib.sha256(payload).digest() + payload


def unseal(data: bytes, path: str | os.PathLike) -> tuple[bytes, bool]:
    """``(payload, checked)`` of the bytes of a checkpoint file ``path``: ``checked`` is ``False`` for a checkpoint
    written before checksums (a bare ``torch.save`` zip), which is returned as it is.

    Raises:
        IntegrityError: the file is empty, shorter than its header, not a checkpoint, or its digest does not match.
    """
    if not data:
        raise IntegrityError(f"checkpoint {path} is empty (0 bytes): not a checkpoint")
    if data.startswith(b"PK\x03\x04"):
        return data, False
    head = len(CHECKPOINT_MAGIC) + _DIGEST
    if not data.startswith(CHECKPOINT_MAGIC) and not CHECKPOINT_MAGIC.startswith(data):
        raise IntegrityError(f"{path} is not a natgrad-diffusion checkpoint (it does not start with its header)")
    if len(data) <= head:
        raise IntegrityError(f"checkpoint {path} is truncated ({len(data)} bytes, shorter than its header)")
    payload = data[head:]
    if hashlib.sha256(payload).digest() != data[len(CHECKPOINT_MAGIC) : head]:
        raise IntegrityError(
            f"checkpoint {path} is corrupted: its SHA-256 differs from the one written with it (damaged or truncated)"
        )
    return payload, True


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: str | os.PathLike) -> Path:
    """Write :data:`MANIFEST_FILE` listing the SHA-256 of every file directly in ``directory``."""
    directory = Path(directory)
    digests = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps({"format": 1, "sha256": digests}, indent=1) + "\n", encoding="utf-8")
    return path


def _plain(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name


def _read_manifest(directory: Path) -> dict[str, str] | None:
    path = directory / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        digests = record["sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{path} is not a policy manifest ({type(exc).__name__})") from None
    if not isinstance(digests, dict) or not all(_plain(k) and isinstance(v, str) for k, v in digests.items()):
        raise IntegrityError(f"{path} is not a policy manifest (its sha256 entry is not a table of file names)")
    return digests


def manifest_files(directory: str | os.PathLike) -> list[str] | None:
    """The files the manifest of ``directory`` lists, with the manifest itself (``None``: no manifest)."""
    digests = _read_manifest(Path(directory))
    return None if digests is None else [*digests, MANIFEST_FILE]


def verify_manifest(directory: str | os.PathLike) -> bool:
    """Check every file the manifest of ``directory`` lists; ``False`` when there is no manifest (a policy exported
    before manifests, or saved by hand).

    Raises:
        IntegrityError: a listed file is missing or its digest differs (one line naming the file).
    """
    directory = Path(directory)
    digests = _read_manifest(directory)
    if digests is None:
        return False
    for name, digest in digests.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (listed in {MANIFEST_FILE})")
        if sha256_file(path) != digest:
            raise IntegrityError(f"{path} is corrupted: its SHA-256 differs from the one in {MANIFEST_FILE}")
    return True
