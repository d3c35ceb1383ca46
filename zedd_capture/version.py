"""What made a product: the package version, and the git commit when it runs from a checkout.

Recorded in every calibration product's provenance, in work/build_depth.json and in each capture session of
raw/capture.json, so that a benchmark scene says which code built it; ``zedd --version`` prints the same.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from . import __version__


@functools.lru_cache(maxsize=1)
def tool_version() -> str:
    """``"<version>"``, or ``"<version> (git <commit>[-dirty])"`` when the package runs from a git checkout
    (an editable install: ``make setup``). Never fails: without git, or outside a checkout, the version alone."""
    package_dir = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != package_dir.parent:
            return __version__  # not a checkout, or a checkout of something else that holds the install
        commit = subprocess.run(["git", "-C", str(package_dir), "describe", "--always", "--dirty", "--abbrev=12"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return __version__
    described = commit.stdout.strip()
    return f"{__version__} (git {described})" if commit.returncode == 0 and described else __version__
