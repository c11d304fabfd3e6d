"""promtool, amtool and alertmanager for the ops tests, from Debian 12's `prometheus` and
`prometheus-alertmanager` packages, unpacked (no service, no root needed once downloaded) into
`.venv/prometheus-tools`. Run `python -m tests.ops.tools` to install them ahead of the tests.

The tests never skip when the tools are missing: they install them, and fail if they cannot.

Debian's alertmanager reads its default template from the absolute path
`/usr/share/prometheus/alertmanager/default.tmpl`, whatever its flags and configuration say, and
that file exists only where the package is installed system-wide. `alertmanager_command` runs it
in a private mount namespace where the unpacked tree is overlaid on `/usr/share`, so the machine's
own `/usr/share` is neither needed nor touched.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = ROOT / ".venv" / "prometheus-tools"
BIN_DIR = TOOLS_DIR / "usr" / "bin"
PACKAGES = ("prometheus", "prometheus-alertmanager")
BINARIES = ("promtool", "amtool", "prometheus-alertmanager")
SHARE_DIR = TOOLS_DIR / "usr" / "share"


def install_prometheus_tools() -> Path:
    """The directory holding the binaries; downloads and unpacks the packages once."""
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    # Parallel test processes share one download.
    with (TOOLS_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((BIN_DIR / name).exists() for name in BINARIES):
            _download_and_unpack()
    return BIN_DIR


def alertmanager_command(bin_dir: Path, *args: str) -> list[str]:
    """The command line that runs the unpacked alertmanager with its own templates in place.

    Needs root (a mount namespace and an overlay mount); raises RuntimeError otherwise.
    """
    if os.geteuid() != 0:
        raise RuntimeError(
            "the alertmanager test needs root: it overlays the unpacked templates on /usr/share "
            "in a private mount namespace"
        )
    overlay = 'mount -t overlay overlay -o "lowerdir=$1:/usr/share" /usr/share && shift && exec "$@"'
    return [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", overlay, "sh",
        str(SHARE_DIR), str(bin_dir / "prometheus-alertmanager"), *args,
    ]


def _download_and_unpack() -> None:
    debs = TOOLS_DIR / "debs"
    debs.mkdir(exist_ok=True)
    for deb in debs.glob("*.deb"):
        deb.unlink()
    download = ["apt-get", "download", *PACKAGES]
    result = subprocess.run(download, cwd=debs, capture_output=True, text=True)
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh CI image has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        result = subprocess.run(download, cwd=debs, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"cannot download {' '.join(PACKAGES)} with apt-get: {result.stderr.strip()}"
        )
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(TOOLS_DIR)], check=True)
    missing = [name for name in BINARIES if not (BIN_DIR / name).exists()]
    if missing:
        raise RuntimeError(f"the packages did not contain {missing}")


if __name__ == "__main__":
    print(install_prometheus_tools())
    sys.exit(0)
