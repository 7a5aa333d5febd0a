"""Archives crafted member by member, for the verifier's refusal tests."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from regmix import archive


def crafted_archive(path: Path, members, manifest_names=None) -> Path:
    """A tar.gz of `members` (name, data or ("type", tarfile type)) whose manifest lists
    `manifest_names` (default: every regular member's name under regmix-run/)."""
    entries = []
    for name, content in members:
        info = tarfile.TarInfo(name)
        if isinstance(content, tuple):  # ("type", a tarfile type constant)
            info.type, info.linkname, content = content[1], "/etc/passwd", None
        else:
            info.size = len(content)
        entries.append((info, content))
    if manifest_names is None:
        manifest_names = [i.name.removeprefix("regmix-run/") for i, c in entries if c is not None]
    data = {i.name: c for i, c in entries if c is not None}
    lines = "".join(
        f"{hashlib.sha256(data.get(f'regmix-run/{n}', data.get(n, b''))).hexdigest()}  {n}\n" for n in manifest_names
    ).encode()
    with tarfile.open(path, "w:gz") as tar:
        manifest = tarfile.TarInfo(f"regmix-run/{archive.MANIFEST}")
        manifest.size = len(lines)
        tar.addfile(manifest, io.BytesIO(lines))
        for info, content in entries:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return path
