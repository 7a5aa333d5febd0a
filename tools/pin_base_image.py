"""Pin the containers' base image to the digest its tag has now (needs skopeo and a
reachable registry). Rewrites containers/regmix.def and containers/Containerfile."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEF_FILE, CONTAINERFILE = ROOT / "containers" / "regmix.def", ROOT / "containers" / "Containerfile"


def main() -> int:
    match = re.search(r"^From:\s*(\S+)", DEF_FILE.read_text(), re.M)
    tag = match.group(1).split("@")[0]
    digest = subprocess.run(
        ["skopeo", "inspect", "--format", "{{.Digest}}", f"docker://docker.io/library/{tag}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        print(f"unexpected digest from skopeo: {digest!r}", file=sys.stderr)
        return 1
    for path, pattern in ((DEF_FILE, r"^(From:\s*)(\S+)"), (CONTAINERFILE, r"^(FROM\s+)(\S+)")):
        text = re.sub(
            pattern, lambda m: f"{m.group(1)}{m.group(2).split('@')[0]}@{digest}", path.read_text(), count=1, flags=re.M
        )
        path.write_text(text)
    print(f"{tag}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
