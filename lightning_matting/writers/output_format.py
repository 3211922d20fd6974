"""OutputFormat: what an output file looks like (format, container, codec, alpha, audio, segments).

Lightning-free: it names output paths, opens the writer of one output, and joins its chunks, so a
callback (or a script) composes it instead of knowing each backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

from lightning_matting.metadata import VideoInfo
from lightning_matting.validators import check_choice, check_int, check_number, invalid
from lightning_matting.video_names import folder_name

from .base import FrameWriter
from .images import ALPHA_EXTENSIONS, ImageSequenceWriter, check_image_depth
from .join import join_parts, preview_parts
from .opencv import VideoWriter
from .pyav import ALPHA_CODECS, PRESETS, AVWriter, check_video_depth
from .segments import SegmentedWriter, segment_frames_for

Format = Literal["video", "image_sequence"]
Codec = Literal["h264", "hevc", "prores4444", "vp9", "ffv1"]
BitDepth = Literal[8, 10, 16, 32]
BIT_DEPTHS = (8, 10, 16, 32)
AUDIO_OUTPUTS = ("com", "fgr")  # the outputs that carry the source's audio with audio=True

# The container each OpenCV fourcc is written in unless `extension` says otherwise.
_VIDEO_EXTENSIONS = {"mp4v": "mp4", "FFV1": "mkv", "MJPG": "avi", "XVID": "avi"}


def check_segment_seconds(segment_seconds: object) -> float:
    """Seconds per segment as a number >= 0 (0: unsegmented); None counts as 0."""
    return 0.0 if segment_seconds is None else check_number("segment_seconds", segment_seconds, minimum=0)


def check_codec(codec: object) -> str | None:
    """A PyAV codec preset name, or None for OpenCV."""
    if codec is not None and codec not in PRESETS:
        raise ValueError(
            invalid("codec", codec, f"one of {', '.join(map(repr, PRESETS))} (PyAV), or None (OpenCV)")
        )
    return codec


def check_alpha(alpha: bool, format: str, codec: str | None) -> None:
    """Alpha video needs an alpha-capable codec."""
    if alpha and format == "video" and codec not in ALPHA_CODECS:
        raise ValueError(
            f"alpha video needs codec= one of {', '.join(ALPHA_CODECS)} (OpenCV and codec {codec!r} carry no "
            "alpha), or format='image_sequence'"
        )


def check_audio(audio: bool, format: str, codec: str | None) -> None:
    """Copying the source's audio needs PyAV video output."""
    if audio and (codec is None or format != "video"):
        raise ValueError("audio=True needs PyAV video output: give codec= one of " + ", ".join(PRESETS))


def check_bit_depth(bit_depth: object, format: str, codec: str | None, extension: str) -> int:
    """Bits per sample the files store: `bit_depth` if this format holds it, else an error naming what does;
    None: the format's default (8; 10 for prores4444, 32 for exr)."""
    if bit_depth is not None and (type(bit_depth) is not int or bit_depth not in BIT_DEPTHS):
        raise ValueError(
            invalid("bit_depth", bit_depth, f"one of {', '.join(map(str, BIT_DEPTHS))}, or None")
        )
    if format == "image_sequence":
        return check_image_depth(extension, bit_depth)
    if codec is not None:
        return check_video_depth(codec, bit_depth)
    if bit_depth not in (None, 8):
        raise ValueError(
            f"bit_depth {bit_depth} needs PyAV video (codec= ffv1 for 16, h264, hevc or prores4444 for 10) or "
            f"format='image_sequence' (png or tif for 16, tif or exr for 32); OpenCV video stores 8 bits"
        )
    return 8


@dataclass(frozen=True)
class OutputFormat:
    """How every output of a run is stored; checked when made.

    Args:
        format: "video" (a file per output) or "image_sequence" (a folder of numbered images per output).
        fourcc: OpenCV's 4-character codec when `codec` is None: mp4v (.mp4), MJPG (.avi), FFV1 (.mkv).
        codec: A PyAV preset (extra `[av]`): h264, hevc, prores4444, vp9 or ffv1; None: OpenCV.
        codec_options: FFmpeg encoder options over the preset's ({"crf": "23"}).
        extension: The file extension (video) or image type (image sequences); None: the format's default
            (png; the codec's first container; mp4 for mp4v, avi for MJPG, mkv otherwise).
        alpha: `com` as RGBA [fgr * (pha > 0), pha] (straight alpha); None: True for image sequences only.
            Alpha video needs prores4444, vp9 or ffv1.
        audio: com and fgr carry the source video's audio (needs `codec`).
        queue_size: Batches that may wait per writer before `add_batch` blocks.
        segment_seconds: Video written in finalized segments of this many seconds, joined at the end, so a
            hard kill loses at most one; 0 or None: a single file.
        bit_depth: Bits per sample stored: 8; 10 (h264, hevc, prores4444); 16 (ffv1, png, tif: integers);
            32 (tif, exr: float). None: the format's default (8; 10 for prores4444, 32 for exr); resolved
            when made. Above 8, floats reach the encoder at 16 bits (or as float32 for 32).

    Raises:
        TypeError: A number of the wrong type, naming it.
        ValueError: A setting out of its allowed values, naming it.
    """

    format: Format = "video"
    fourcc: str = "mp4v"
    codec: Codec | None = None
    codec_options: Mapping[str, str] | None = None
    extension: str | None = None
    alpha: bool | None = None
    audio: bool = False
    queue_size: int = 4
    segment_seconds: float | None = 2.0
    bit_depth: BitDepth | None = None
    resolved_extension: str = field(init=False)

    def __post_init__(self) -> None:
        check_choice("format", self.format, ("video", "image_sequence"))
        check_codec(self.codec)
        alpha = self.format == "image_sequence" if self.alpha is None else self.alpha
        check_alpha(alpha, self.format, self.codec)
        check_audio(self.audio, self.format, self.codec)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "queue_size", check_int("queue_size", self.queue_size, minimum=1))
        object.__setattr__(self, "segment_seconds", check_segment_seconds(self.segment_seconds))
        object.__setattr__(self, "resolved_extension", self._default_extension())
        depth = check_bit_depth(self.bit_depth, self.format, self.codec, self.resolved_extension)
        object.__setattr__(self, "bit_depth", depth)

    def _default_extension(self) -> str:
        if self.extension is not None:
            return self.extension.lstrip(".")
        if self.format == "image_sequence":
            return "png"
        if self.codec is not None:
            return PRESETS[self.codec].extensions[0]
        return _VIDEO_EXTENSIONS.get(self.fourcc, "mkv")

    @property
    def join_fourcc(self) -> str | None:
        """The fourcc a join re-encodes with when PyAV is missing; None for PyAV outputs."""
        return None if self.codec else self.fourcc

    def path(self, root: str | Path, video: str, output: str) -> Path:
        """Where `output` of `video` goes under `root`: `<root>/<folder>/<output>.<ext>`, or a folder, where
        `<folder>` is `folder_name(video)` (the name made one safe folder name)."""
        if self.format == "image_sequence":
            return Path(root) / folder_name(video) / output
        return Path(root) / folder_name(video) / f"{output}.{self.resolved_extension}"

    def paths(self, root: str | Path, video: str, outputs: Sequence[str]) -> dict[str, Path]:
        """{output: where it goes} for every output of `video` under `root`."""
        return {output: self.path(root, video, output) for output in outputs}

    def check_channels(self, output: str, channels: int) -> None:
        """Refuse RGBA frames of `output` that these files cannot store, naming what stores them.

        Args:
            output: The output's name.
            channels: Its frames' channel count (1 grey, 3 RGB, 4 RGBA).

        Raises:
            ValueError: 4 channels into a codec or image type without alpha.
        """
        if channels != 4:
            return
        if self.format == "image_sequence":
            if self.resolved_extension not in ALPHA_EXTENSIONS:
                raise ValueError(
                    f"VideoWriterCallback: output {output!r} has 4 channels (RGBA), which "
                    f"{self.resolved_extension} images cannot store: choose extension= one of "
                    f"{', '.join(ALPHA_EXTENSIONS)}"
                )
            return
        if self.codec is None or not PRESETS[self.codec].alpha:
            encoder = f"OpenCV's {self.fourcc}" if self.codec is None else f"codec {self.codec!r}"
            raise ValueError(
                f"VideoWriterCallback: output {output!r} has 4 channels (RGBA), which {encoder} cannot store: "
                f"choose codec= one of {', '.join(ALPHA_CODECS)} (PyAV), or format='image_sequence'"
            )

    def segment_frames(self, info: VideoInfo) -> int:
        """Frames per chunk of `info`'s video files; 0: one chunk (images, or 0 seconds)."""
        if self.format != "video" or not self.segment_seconds:
            return 0
        return segment_frames_for(info.fps, self.segment_seconds)

    def open(
        self,
        path: Path,
        info: VideoInfo,
        output: str,
        first_frame: int = 0,
        chunked: bool = False,
    ) -> FrameWriter | SegmentedWriter:
        """The writer of one output of one video.

        Args:
            path: The output's path (see `path`).
            info: The video: fps and frame size (width, height in pixels), and its source file for audio.
            output: The output's name; com and fgr carry audio when `audio`.
            first_frame: The first frame this writer receives (images are numbered from it).
            chunked: Video goes into `<path>.parts/` as finalized chunks named by their frames (segments of
                `segment_seconds`, or one chunk when 0), joined later by `join`: a run that may be resumed, or
                one process of several writing the same video. Otherwise a single file.

        Returns:
            A writer whose `add_batch` takes [B,C,H,W] frames and whose `close` finalizes.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "video" and self.codec is None and info.variable_rate:
            warnings.warn(
                f"{info.name} is variable-rate and OpenCV writes its videos at a constant {float(info.fps):.3f} "
                f"fps: their frames drift up to {float(info.largest_drift()):.3f} s from the source's times; "
                "codec='h264' or 'ffv1' (PyAV) keeps each frame's timestamp",
                stacklevel=3,
            )
        if self.format == "image_sequence" or not chunked:
            return self._open_file(
                path, info, output, first_frame, self.audio_from(info, output), info.frame_times
            )
        return SegmentedWriter(
            path,
            lambda part: self._open_file(part, info, output),
            self.segment_frames(info),
            info.fps,
            fourcc=self.join_fourcc,
            first_frame=first_frame,
            audio_from=self.audio_from(info, output),
        )

    def audio_from(self, info: VideoInfo, output: str) -> Path | None:
        """The file whose audio `output` of `info`'s video carries: the source with `audio` for com and fgr."""
        return Path(info.source) if self.audio and output in AUDIO_OUTPUTS and info.source else None

    def _open_file(
        self,
        file: Path,
        info: VideoInfo,
        output: str,
        start: int = 0,
        audio_from: Path | None = None,
        frame_times: tuple[Fraction, ...] | None = None,
    ) -> FrameWriter:
        """One file of `output`: a whole video (`frame_times` its frames' times, PyAV) or a chunk (none: the
        join gives the chunks' frames their times)."""
        if self.format == "image_sequence":
            return ImageSequenceWriter(
                file,
                self.resolved_extension,
                bit_depth=self.bit_depth,
                width=info.width,
                height=info.height,
                start_index=start,
                queue_size=self.queue_size,
            )
        if self.codec is not None:
            return AVWriter(
                file,
                info.fps,
                info.width,
                info.height,
                codec=self.codec,
                bit_depth=self.bit_depth,
                options=self.codec_options,
                audio_from=audio_from,
                frame_times=frame_times,
                queue_size=self.queue_size,
            )
        return VideoWriter(
            file, info.fps, info.width, info.height, fourcc=self.fourcc, queue_size=self.queue_size
        )

    def join(self, path: Path, info: VideoInfo, output: str) -> None:
        """Join the chunks of `path` (`<path>.parts/`), which must hold every frame of `info`'s video, with
        `output`'s audio, and remove them."""
        join_parts(
            path,
            info.fps,
            self.join_fourcc,
            self.audio_from(info, output),
            info.num_frames,
            self._times(info),
        )

    def preview(self, path: Path, info: VideoInfo, output: str) -> None:
        """An interrupted run's playable `path`: its chunks from frame 0 up to the first gap, kept for a resume."""
        preview_parts(path, info.fps, self.join_fourcc, self.audio_from(info, output), self._times(info))

    def _times(self, info: VideoInfo) -> tuple[Fraction, ...] | None:
        """The frame times a join writes: the source's for PyAV outputs (OpenCV's stay constant-rate, as its
        unsegmented files are)."""
        return info.frame_times if self.codec is not None else None
