"""A freedesktop menu entry for the current environment (its Python, this checkout), with the
app's icon, so OpScope starts from the desktop and opens image files from a file manager.

    python main.py --install-desktop      (or: make install-desktop)
    python main.py --uninstall-desktop
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICON = ROOT / "assets" / "icon.png"
NAME = "opscope"
MIME_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp")


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def entry_path() -> Path:
    return data_home() / "applications" / f"{NAME}.desktop"


def icon_path() -> Path:
    return data_home() / "icons" / "hicolor" / "256x256" / "apps" / f"{NAME}.png"


def entry_text(python: str = sys.executable, main: Path = ROOT / "main.py") -> str:
    """The .desktop file: %f hands a file opened from a file manager to the app."""
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Name=OpScope",
        "GenericName=Operator microscope",
        "Comment=See what deep-learning operators do to your own images, live",
        f'Exec="{python}" "{main}" %f',
        f"Icon={NAME}",
        "Terminal=false",
        "Categories=Graphics;Education;Science;",
        "MimeType=" + ";".join(MIME_TYPES) + ";",
        "StartupWMClass=OpScope",
        "",
    ])


def install_desktop() -> Path:
    """Writes the entry and the icon; returns the entry's path."""
    from backends.models.weights import write_atomically

    entry, icon = entry_path(), icon_path()
    entry.parent.mkdir(parents=True, exist_ok=True)
    icon.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ICON, icon)
    write_atomically(entry, entry_text().encode())
    entry.chmod(0o755)
    return entry


def uninstall_desktop() -> list[Path]:
    """Removes the entry and the icon; returns what was removed."""
    removed = []
    for path in (entry_path(), icon_path()):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
