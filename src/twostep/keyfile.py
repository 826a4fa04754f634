"""The data directory and its secret-sealing key file (never in the database)."""

from __future__ import annotations

import os
from pathlib import Path

from twostep.core.secretbox import KEY_BYTES, generate_key


def ensure_data_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def load_or_create_key(path: Path) -> bytes:
    """Read the 256-bit key, creating it with mode 0600 on first start.

    Raises:
        RuntimeError: the file exists but does not hold a key.
    """
    ensure_data_dir(path.parent)
    if not path.exists():
        # Written whole under a temporary name, then linked into place: a concurrent starter either
        # wins the link or reads the winner's complete key, never a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(generate_key().hex().encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return read_key(path)


def read_key(path: Path) -> bytes:
    """Read a key file written by load_or_create_key or rotate-key.

    Raises:
        RuntimeError: the file does not hold a 256-bit hex key.
    """
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise RuntimeError(f"{path} does not hold a hex key") from exc
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} does not hold a 256-bit key")
    return key


def write_key(path: Path, key: bytes) -> None:
    """Atomically replace the key file (used by rotate-key)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.hex().encode() + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def next_key_path(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def load_keys(path: Path) -> list[bytes]:
    """The current key (created on first start) and, if a rotation was interrupted, the next one."""
    keys = [load_or_create_key(path)]
    nxt = next_key_path(path)
    if nxt.exists():
        keys.append(read_key(nxt))
    return keys
