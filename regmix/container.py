"""The image the jobs run in (config key `container`): checked before any job starts,
and named by every job that runs inside one.

The default `container` is the local image file containers/build.sh writes
(build/regmix-<version>.sif, relative to the workflow directory). Apptainer would fail
on the first job if it is missing, with a message that names neither the key nor the way
to make the file; `check_image` says both, before the DAG runs.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from regmix.config import ConfigError


def check_image(container: str, uses_apptainer: bool, workdir: str | Path = ".") -> None:
    """Raise ConfigError when the run will use Apptainer and `container` names a local
    image file that does not exist (relative paths are relative to the workflow dir)."""
    if not uses_apptainer or "://" in container:  # docker://, library://, ...: Apptainer pulls those
        return
    path = Path(workdir) / container
    if not path.is_file():
        raise ConfigError(
            f"container: image file {container} not found in {Path(workdir).resolve()}; build it with"
            f" `bash containers/build.sh --sif {container}` (add --base local where no registry is reachable;"
            " README, section Container) or set `container` to an image you have"
        )


def runtime_line() -> str | None:
    """One line naming the image, OS and interpreter, when running inside regmix's image.

    The image sets REGMIX_IMAGE (containers/Containerfile). Container marker files are not
    used: a host that is itself a container (CI runners, this project's sandboxes) has them,
    and the line would then break the one-line error output of every command."""
    image = os.environ.get("REGMIX_IMAGE")
    if not image:
        return None
    image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER") or image
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        os_name = "unknown"
    import regmix

    return (
        f"regmix: in container {image}: {os_name}, python {sys.executable} {platform.python_version()},"
        f" regmix {regmix.__version__} from {Path(regmix.__file__).parent}"
    )
