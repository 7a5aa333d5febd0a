"""Pin the Containerfile's default base image (ARG BASE) to the digest its tag has now
(needs skopeo and a reachable registry)."""

import re
import subprocess
import sys
from pathlib import Path

CONTAINERFILE = Path(__file__).resolve().parents[1] / "containers" / "Containerfile"
PATTERN = r"^(ARG BASE=)(\S+)"


def main() -> int:
    text = CONTAINERFILE.read_text()
    ref = re.search(PATTERN, text, re.M).group(2).split("@")[0]
    digest = subprocess.run(
        ["skopeo", "inspect", "--format", "{{.Digest}}", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        print(f"unexpected digest from skopeo: {digest!r}", file=sys.stderr)
        return 1
    CONTAINERFILE.write_text(re.sub(PATTERN, lambda m: f"{m.group(1)}{ref}@{digest}", text, count=1, flags=re.M))
    print(f"{ref}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
