"""A first install prints nothing the user did not cause: the editable install of the
package (what ``deploy/bootstrap.sh`` runs) builds without a warning from the build
backend. It once printed setuptools' licence deprecations, then its notice about
editable import finders (the packages are now one ``.pth`` line: pyproject.toml's
``package-dir``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_editable_install_prints_no_warning() -> None:
    # The same install as the bootstrap's, without the dependencies (already there).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = (done.stdout + done.stderr).strip()
    assert output == "", output
    import router

    assert Path(router.__file__).resolve().is_relative_to(ROOT)
