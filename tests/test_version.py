"""`zedd --version` and the tool version recorded in the products (calibration provenance; the build log and the
capture manifest are checked where their tests read them back)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from zedd_capture import __version__
from zedd_capture.calibration.focus_lut import provenance
from zedd_capture.cli import app
from zedd_capture.version import tool_version

REPO = Path(__file__).resolve().parent.parent


def _checkout_commit() -> str | None:
    """This checkout's commit (12 hex digits), asked of git independently; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip()[:12] if out.returncode == 0 else None


def test_version_names_the_package_and_the_checkout_commit():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    commit = _checkout_commit()
    if commit is None:
        assert line == f"zedd-toolkit {__version__}"
    else:  # HEAD, with -dirty when tracked files differ from it (a clean CI checkout: none)
        assert re.fullmatch(rf"zedd-toolkit {re.escape(__version__)} \(git {commit}(-dirty)?\)", line), line
    assert line == f"zedd-toolkit {tool_version()}"


def test_calibration_provenance_records_the_tool_version():
    rec = provenance("focus_lut", "zedd-sim", "breathing")
    assert rec["tool"] == "zedd-toolkit" and rec["tool_version"] == tool_version()
    assert rec["tool_version"].startswith(__version__)
