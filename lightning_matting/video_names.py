"""Video names are data, not paths: each becomes one folder name inside the output folder (Lightning-free)."""

from __future__ import annotations

import re
import warnings

# Separators, control characters and what Windows refuses in a file name.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')
# Names Windows keeps for devices, with or without an extension, in any case.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{port}{k}" for port in ("COM", "LPT") for k in range(1, 10)}


def check_video_name(value: object) -> str:
    """A video name as given: a str.

    Raises:
        TypeError: `value` is not a str, naming it and its type.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"VideoWriterCallback: a video name must be a str, got {value!r} ({type(value).__name__}); give "
            '"video" in the step\'s output or the batch as a str, or one str per sample'
        )
    return value


def folder_name(name: object) -> str:
    """The one folder name under the output folder that holds video `name`'s outputs, safe on every OS.

    A separator (/ or \\), control character or one of <>:"|?* becomes "_", and so does each leading dot
    (no hidden folder, no `.` or `..`) and each trailing dot or space; an empty name is "_"; a Windows device
    name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, any case, with or without an extension) gets "_" after its stem.
    A safe name is returned as it is.

    Args:
        name: The video's name.

    Returns:
        One path component, never empty.

    Raises:
        TypeError: `name` is not a str.
    """
    safe = _UNSAFE.sub("_", check_video_name(name))
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    stripped = safe.rstrip(". ")
    safe = (stripped + "_" * (len(safe) - len(stripped))) or "_"
    stem, dot, extension = safe.partition(".")
    return f"{stem}_{dot}{extension}" if stem.upper() in _RESERVED else safe


class VideoFolders:
    """The folders of one run's videos: each name's `folder_name`, two names in one folder refused."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # folder: the name written there

    def folder(self, name: str) -> str:
        """The folder of video `name`; a name that is not its folder warns once.

        Raises:
            TypeError: `name` is not a str.
            ValueError: Another video of this run has the same folder.
        """
        folder = folder_name(name)
        if folder not in self._names:
            self._names[folder] = name
            if folder != name:
                warnings.warn(
                    f"VideoWriterCallback: video {name!r} is written to the folder {folder!r} (a video name is "
                    "one folder name: no separators, leading dots, control characters or device names)",
                    stacklevel=3,
                )
        elif self._names[folder] != name:
            raise ValueError(
                f"VideoWriterCallback: videos {self._names[folder]!r} and {name!r} both become the folder "
                f"{folder!r} (a video name is one folder name, made safe); give the videos names that differ "
                "in letters or digits"
            )
        return folder
