"""AVWriter: video through PyAV (FFmpeg): H.264, HEVC, ProRes 4444, VP9 and FFV1, alpha, audio from a source.

PyAV is an optional dependency (`pip install 'lightning-matting[av]'`); it is imported when a writer opens,
so this module imports without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lightning_matting.full_scale import FULL_SCALE, full_scale
from lightning_matting.metadata import frame_time, to_fraction
from lightning_matting.validators import check_choice, invalid

from .base import FrameWriter
from .durable import check_storage
from .frames import check_frames, samples_for_bits
from .opencv import make_parent

if TYPE_CHECKING:
    from av.container import InputContainer, OutputContainer
    from av.packet import Packet


@dataclass(frozen=True)
class Preset:
    """An FFmpeg encoder, the containers it is written to (first: the default), and its stream settings.

    `pix_fmts` maps each bit depth the codec stores (bits per sample; first: the default) to a map from the
    input channel count (1 grey, 3 RGB, 4 RGBA where the codec carries alpha) to the pixel format of the
    stream; `options` are the encoder's default options.
    """

    encoder: str
    extensions: tuple[str, ...]
    pix_fmts: Mapping[int, Mapping[int, str]]
    options: Mapping[str, str] = field(default_factory=dict)
    even_size: bool = False  # the encoder refuses odd widths and heights (4:2:0 in H.264/HEVC)
    mp4_tag: str | None = None  # the codec tag in .mp4/.mov, where players need one other than FFmpeg's

    @property
    def alpha(self) -> bool:
        return any(4 in formats for formats in self.pix_fmts.values())

    @property
    def depths(self) -> tuple[int, ...]:
        """The bit depths the codec stores; the first is the default."""
        return tuple(self.pix_fmts)


PRESETS: dict[str, Preset] = {
    "h264": Preset(
        "libx264",
        ("mp4", "mov", "mkv"),
        {8: {1: "yuv420p", 3: "yuv420p"}, 10: {1: "yuv420p10le", 3: "yuv420p10le"}},
        {"crf": "18", "preset": "veryfast"},
        even_size=True,
    ),
    "hevc": Preset(
        "libx265",
        ("mp4", "mov", "mkv"),
        {8: {1: "yuv420p", 3: "yuv420p"}, 10: {1: "yuv420p10le", 3: "yuv420p10le"}},
        {"crf": "20", "preset": "veryfast", "x265-params": "log-level=error"},
        even_size=True,
        mp4_tag="hvc1",  # Apple players refuse FFmpeg's default 'hev1'
    ),
    "prores4444": Preset(
        "prores_ks",
        ("mov", "mkv"),
        {10: {1: "yuv444p10le", 3: "yuv444p10le", 4: "yuva444p10le"}},  # the encoder takes 10-bit alpha
        {"profile": "4444"},
    ),
    "vp9": Preset(  # alpha reads back through the libvpx-vp9 decoder; FFmpeg's default vp9 decoder drops it
        "libvpx-vp9",
        ("webm", "mkv"),
        {8: {1: "yuv420p", 3: "yuv420p", 4: "yuva420p"}},
        {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
    ),
    "ffv1": Preset(
        "ffv1",
        ("mkv",),
        {8: {1: "gray", 3: "bgr0", 4: "bgra"}, 16: {1: "gray16le", 3: "rgb48le", 4: "rgba64le"}},
        {"level": "3"},
    ),
}
CODEC_BY_EXTENSION = {"mp4": "h264", "mov": "prores4444", "webm": "vp9", "mkv": "ffv1"}
ALPHA_CODECS = tuple(name for name, preset in PRESETS.items() if preset.alpha)

# The pixel format of the frames handed to PyAV, by sample type and channel count.
_INPUT_FORMATS = {
    "uint8": {1: "gray", 3: "rgb24", 4: "rgba"},
    "uint16": {1: "gray16le", 3: "rgb48le", 4: "rgba64le"},
}


def _import_av() -> Any:
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "AVWriter needs PyAV: pip install 'lightning-matting[av]' (or pip install av)"
        ) from error
    return av


def has_encoder(av: Any, name: str) -> bool:
    """Whether this PyAV build's FFmpeg has the encoder `name`."""
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def available_codecs() -> list[str]:
    """The names of the presets (keys of PRESETS) whose encoder this PyAV/FFmpeg build carries."""
    av = _import_av()
    return [name for name, preset in PRESETS.items() if has_encoder(av, preset.encoder)]


def _choose_codec(path: Path, codec: object) -> str:
    extension = path.suffix.lower().lstrip(".")
    if codec is None:
        if extension not in CODEC_BY_EXTENSION:
            raise ValueError(
                f"cannot choose a codec for {path} (extension {path.suffix!r}): use one of "
                f"{', '.join('.' + ext for ext in CODEC_BY_EXTENSION)} "
                f"or pass codec= one of {', '.join(PRESETS)}"
            )
        return CODEC_BY_EXTENSION[extension]
    check_choice("codec", codec, PRESETS)
    if extension not in PRESETS[codec].extensions:
        raise ValueError(
            f"codec {codec!r} is written to {' or '.join('.' + ext for ext in PRESETS[codec].extensions)} "
            f"files, got {path.name!r}"
        )
    return codec


def _check_frame_times(frame_times: object) -> tuple[Fraction, ...] | None:
    """Frame times as exact Fractions, checked to start at 0 and increase."""
    if frame_times is None:
        return None
    times = tuple(Fraction(time) for time in frame_times)  # type: ignore[union-attr]
    backwards = next((i for i in range(1, len(times)) if times[i] <= times[i - 1]), None)
    if (times and times[0] != 0) or backwards is not None:
        raise ValueError(
            "frame_times must start at 0 and increase (seconds from the first frame), got "
            + (
                f"{float(times[0])} first"
                if backwards is None
                else f"frame {backwards} at {float(times[backwards])} after {float(times[backwards - 1])}"
            )
        )
    return times


def check_video_depth(codec: str, bit_depth: object) -> int:
    """The bits per sample `codec` stores: `bit_depth`, or the codec's default when None."""
    depths = PRESETS[codec].depths
    if bit_depth is None:
        return depths[0]
    if bit_depth not in depths:
        others = [name for name, preset in PRESETS.items() if bit_depth in preset.depths]
        raise ValueError(
            f"bit_depth {bit_depth!r} is not stored by codec {codec!r}, which takes "
            f"{' or '.join(map(str, depths))}; bit_depth {bit_depth!r} needs codec "
            f"{' or '.join(others) if others else 'none (video codecs take 8, 10 or 16)'}"
        )
    return bit_depth


def _check_options(options: object) -> dict[str, str]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
        raise TypeError(invalid("options", options, "a dict of FFmpeg encoder options such as {'crf': 18}"))
    return {key: str(value) for key, value in options.items()}


# The time base of variable-rate outputs: fine enough for the phones' 1/600 and the broadcast 1/90000 (Matroska
# keeps its own 1/1000).
VARIABLE_RATE_TIME_BASE = Fraction(1, 90000)


class AudioCopy:
    """Copies the first audio stream of `source` into `output`, up to a time, shifted so that the source's
    first video frame is at 0; re-encoded (AAC, else Opus) where the output container cannot hold the codec.
    """

    def __init__(self, source: InputContainer, output: OutputContainer):
        self._source = source
        self._output = output
        audio = source.streams.audio[0]
        anchor = source.streams.video[0] if source.streams.video else audio
        start = anchor.start_time or 0
        self._offset = Fraction(start) * anchor.time_base  # seconds
        self._packets = source.demux(audio)
        self._pending: Packet | None = None
        if audio.codec_context.codec.canonical_name in output.supported_codecs:
            self.stream = output.add_stream_from_template(audio)
            self._decoder = None
        else:
            encoder = "aac" if "aac" in output.supported_codecs else "libopus"
            rate = audio.codec_context.sample_rate if encoder == "aac" else 48000
            self.stream = output.add_stream(encoder, rate=rate, layout=audio.codec_context.layout)
            self._decoder = audio.codec_context

    def copy_until(self, end: Fraction) -> None:
        """Write every packet that starts before `end` seconds (of the output) and was not yet written."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if packet.pts is not None and packet.pts * packet.time_base - self._offset >= end:
                return
            self._pending = None
            if packet.pts is not None and packet.size > 0:
                self._write(packet)

    def _write(self, packet: Packet) -> None:
        shift = round(self._offset / packet.time_base)
        if self._decoder is None:
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.stream
            self._output.mux(packet)
            return
        for frame in self._decoder.decode(packet):
            if frame.pts is not None:
                frame.pts -= shift
            self._output.mux(self.stream.encode(frame))

    def finish(self, end: Fraction) -> None:
        """Write the packets that start before `end` seconds and flush a re-encoding."""
        self.copy_until(end)
        if self._decoder is not None:
            self._output.mux(self.stream.encode(None))

    def close(self) -> None:
        """Close the source file."""
        self._source.close()


def open_audio_source(audio_from: Path, written: Path) -> InputContainer | None:
    """Open `audio_from` for its first audio stream; None (with a warning naming `written`) when it has none.

    Args:
        audio_from: A video or audio file.
        written: The output that would carry the audio (named in the warning).

    Returns:
        The open PyAV container (the caller closes it), or None for a file without audio.

    Raises:
        FileNotFoundError: `audio_from` is not a file.
        ValueError: PyAV cannot read it.
    """
    av = _import_av()
    if not audio_from.is_file():
        raise FileNotFoundError(f"audio_from {audio_from} is not a file (expected a video or audio file)")
    try:
        source = av.open(str(audio_from))
    except av.FFmpegError as error:
        raise ValueError(f"audio_from {audio_from} cannot be read by PyAV: {error}") from error
    if source.streams.audio:
        return source
    source.close()
    warnings.warn(
        f"audio_from {audio_from} has no audio stream: {written} is written without audio", stacklevel=6
    )
    return None


def _round_alpha(frame: Any, alpha: np.ndarray) -> None:
    """Store 16-bit `alpha` [H,W] in the alpha plane of a YUVA `frame` rounded to nearest at the plane's depth
    (FFmpeg's conversion drops the low bits: up to a whole level off at 10 bits)."""
    bits = frame.format.components[3].bits
    plane = frame.planes[3]
    rounded = np.rint(alpha * (full_scale(bits) / FULL_SCALE[torch.uint16])).astype(np.uint16)
    padded = np.zeros((plane.height, plane.line_size // 2), np.uint16)
    padded[: alpha.shape[0], : alpha.shape[1]] = rounded
    plane.update(padded.tobytes())


class AVWriter(FrameWriter):
    """Video file through PyAV (FFmpeg): VideoWriter's contract, plus codecs with alpha, and audio.

    `codec`: a key of PRESETS, by default chosen by the extension: .mp4 h264, .mov prores4444, .webm vp9,
    .mkv ffv1 (lossless); h264/hevc also write .mov/.mkv, prores4444/vp9 also .mkv. `options`: FFmpeg
    encoder options over the preset's (`{"crf": 23, "preset": "slow"}`; a bitrate `{"b": "8M"}` drops the
    preset's crf). Frames [B,C,H,W], float in [0,1] or uint8: C=3 RGB; C=4 RGBA, straight alpha
    (prores4444, vp9, ffv1); C=1 grey (a gray stream in ffv1, neutral chroma elsewhere); the first batch
    fixes C for the file. `bit_depth`: bits per sample stored, h264/hevc 8 or 10, prores4444 10 (alpha
    too), vp9 8, ffv1 8 or 16 (gray16le, rgb48le, rgba64le); None: the codec's first. Deeper than 8 bits, frames
    reach the encoder as 16-bit samples (value x 65535, rounded), so a float alpha keeps its precision.
    YUV streams are BT.709 limited range, tagged so. H.264/HEVC need even sizes:
    `odd_size="pad"` (default) repeats the last column/row and warns, "error" refuses; `encoded_size` is
    what the file holds. `frame_rate` is stored exactly (30000/1001 reads back as 30000/1001).
    `audio_from`: a file whose first audio stream is copied (re-encoded to AAC/Opus where the container
    cannot hold it) up to the last frame written, aligned with its first video frame; a file without audio
    warns, and the video is silent. `frame_times`: frame i is presented at `frame_times[i]` seconds (a
    variable-rate source's timestamps, in a 1/90000 s time base), `frame_rate` then being the average rate.

    Args:
        path: The video file; its extension picks the container.
        frame_rate: Frames per second: a number, a Fraction or "30000/1001", stored exactly.
        width: Frame width in pixels.
        height: Frame height in pixels.
        codec: h264, hevc, prores4444, vp9 or ffv1; None: chosen by the extension.
        bit_depth: Bits per sample the file stores (see above); None: 8, or 10 for prores4444.
        options: FFmpeg encoder options over the preset's.
        audio_from: A file whose first audio stream is copied, cut to the video's length.
        frame_times: Each frame's presentation time in seconds from the first, increasing (a variable-rate
            source's `VideoInfo.frame_times`); None: every 1 / frame_rate.
        odd_size: "pad" or "error" for odd sizes with h264/hevc.
        queue_size: Batches that may wait for the encoder thread before `add_batch` blocks.

    Raises:
        TypeError: Options, a rate or a size of the wrong type.
        ValueError: A bad codec, bit depth, option, rate or size, or an encoder this PyAV build lacks.
        ImportError: PyAV is not installed (the `[av]` extra).

    Example::

        with AVWriter("com.webm", Fraction(30000, 1001), 1920, 1080, audio_from="input.mp4") as writer:
            writer.add_batch(rgba)  # [B,4,H,W] float in [0,1]
    """

    channels = (1, 3, 4)
    channel_order = "rgb"

    def __init__(
        self,
        path: str | Path,
        frame_rate: int | float | Fraction,
        width: int,
        height: int,
        *,
        codec: str | None = None,
        bit_depth: int | None = None,
        options: Mapping[str, object] | None = None,
        audio_from: str | Path | None = None,
        frame_times: Sequence[Fraction] | None = None,
        odd_size: Literal["pad", "error"] = "pad",
        queue_size: int = 4,
    ):
        self.frame_rate = to_fraction(frame_rate, "frame_rate")
        self.frame_times = _check_frame_times(frame_times)
        self.time_base = 1 / self.frame_rate if self.frame_times is None else VARIABLE_RATE_TIME_BASE
        self.codec = _choose_codec(Path(path), codec)
        self.preset = PRESETS[self.codec]
        self.bit_depth = check_video_depth(self.codec, bit_depth)
        self.pix_fmts = self.preset.pix_fmts[self.bit_depth]
        self.samples = samples_for_bits(self.bit_depth)
        options = _check_options(options)
        defaults = dict(self.preset.options)
        if "b" in options:  # a bitrate asks for bitrate control, which the preset's crf would override
            defaults.pop("crf", None)
        self.options = defaults | options
        check_choice("odd_size", odd_size, ("pad", "error"))
        self.odd_size = odd_size
        self.audio_from = None if audio_from is None else Path(audio_from)
        self._input_channels: int | None = None
        self._frames_encoded = 0
        self._failed = False
        super().__init__(path, width, height, queue_size=queue_size)

    def _open(self) -> None:
        self._av = av = _import_av()
        if not has_encoder(av, self.preset.encoder):
            raise ValueError(
                f"codec {self.codec!r} needs the FFmpeg encoder {self.preset.encoder!r}, which this PyAV "
                f"build lacks; codecs available here: {', '.join(available_codecs()) or 'none'}"
            )
        self._pad = self._padding()
        self.encoded_size = (self.width + self._pad[0], self.height + self._pad[1])
        self._check_encoder_opens(av)
        source = None if self.audio_from is None else open_audio_source(self.audio_from, self.path)
        try:
            make_parent(self.path)
            try:  # PyAV opens the file only at the first packet: try it here, where the caller sees the error
                self.path.open("wb").close()
                self._container = av.open(str(self.path), "w")
            except (av.FFmpegError, OSError) as error:
                raise OSError(
                    f"PyAV could not open {self.path} for writing ({self.codec}): {error}"
                ) from error
        except BaseException:
            if source is not None:
                source.close()
            raise
        self._stream = self._add_video_stream()
        self._audio = None if source is None else AudioCopy(source, self._container)

    def _padding(self) -> tuple[int, int]:
        pad_w, pad_h = self.width % 2, self.height % 2
        if not self.preset.even_size or not (pad_w or pad_h):
            return 0, 0
        if self.odd_size == "error":
            raise ValueError(
                f"width and height must be even for {self.codec} (4:2:0), got {self.width}x{self.height}; "
                f"pass odd_size='pad' to pad to {self.width + pad_w}x{self.height + pad_h}, or use a codec "
                f"that takes odd sizes (prores4444, vp9, ffv1)"
            )
        warnings.warn(
            f"{self.path}: {self.width}x{self.height} is odd and {self.codec} needs even sizes; frames are "
            f"padded (last column/row repeated) to {self.width + pad_w}x{self.height + pad_h}",
            stacklevel=5,
        )
        return pad_w, pad_h

    def _configure(self, context: Any, pix_fmt: str) -> None:
        """Size, rate and colour tags of a codec context before it opens."""
        context.width, context.height = self.encoded_size
        context.pix_fmt = pix_fmt
        context.time_base = self.time_base
        context.framerate = self.frame_rate
        if pix_fmt.startswith("yuv"):
            context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
            context.color_range = 1  # limited ("MPEG")

    def _check_encoder_opens(self, av: Any) -> None:
        """Open a throwaway encoder with the options: a bad option fails here, not on the worker thread."""
        context = av.CodecContext.create(self.preset.encoder, "w")
        self._configure(context, self.pix_fmts[3])
        context.options = dict(self.options)
        try:
            context.open()
        except av.FFmpegError as error:
            raise ValueError(
                f"the {self.preset.encoder} encoder refused options {self.options} at "
                f"{self.encoded_size[0]}x{self.encoded_size[1]}: {error}"
            ) from error
        if context.options:
            raise ValueError(
                f"options {sorted(context.options)} are not options of the {self.preset.encoder} encoder "
                f"(see `ffmpeg -h encoder={self.preset.encoder}`)"
            )

    def _add_video_stream(self) -> Any:
        stream = self._container.add_stream(
            self.preset.encoder, rate=self.frame_rate, options=dict(self.options)
        )
        self._configure(stream.codec_context, self.pix_fmts[3])
        stream.time_base = self.time_base
        if self.preset.mp4_tag and self.path.suffix.lower() in (".mp4", ".mov"):
            stream.codec_tag = self.preset.mp4_tag
        return stream

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W]; C=4 needs a codec with alpha, and every batch has the first batch's C."""
        if not self._closed:
            channels = check_frames(frames, self.width, self.height, self.channels).shape[1]
            if channels == 4 and not self.preset.alpha:
                raise ValueError(
                    f"frames with 4 channels (RGBA) need a codec with alpha ({', '.join(ALPHA_CODECS)}); "
                    f"codec {self.codec!r} has none"
                )
            if self._input_channels is None and frames.shape[0] > 0:
                self._input_channels = channels
                self._stream.codec_context.pix_fmt = self.pix_fmts[channels]
            elif self._input_channels not in (None, channels):
                raise ValueError(
                    f"frames must have C={self._input_channels} like the first batch (the stream is "
                    f"{self._stream.codec_context.pix_fmt}), got C={channels}"
                )
        super().add_batch(frames, hand_over)

    def _write(self, first_index: int, frames: np.ndarray) -> None:
        try:
            for offset, frame in enumerate(frames):
                self._encode(first_index + offset, frame)
            if self._audio is not None:
                self._audio.copy_until(self._time_of(self._frames_encoded))
        except OSError as error:
            self._failed = True
            check_storage(self.path, error)
            raise
        except BaseException:
            self._failed = True
            raise

    def _encode(self, index: int, frame: np.ndarray) -> None:
        pad_w, pad_h = self._pad
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        channels = frame.shape[2]
        video_frame = self._av.VideoFrame.from_ndarray(
            frame[..., 0] if channels == 1 else frame, format=_INPUT_FORMATS[self.samples][channels]
        )
        context = self._stream.codec_context
        if context.pix_fmt.startswith("yuv"):
            video_frame = video_frame.reformat(
                format=context.pix_fmt,
                dst_colorspace=self._av.video.reformatter.Colorspace.ITU709,
                dst_color_range=self._av.video.reformatter.ColorRange.MPEG,
            )
            if channels == 4 and self.samples == "uint16":
                _round_alpha(video_frame, frame[..., 3])
        video_frame.pts = round(self._time_of(index) / context.time_base)
        video_frame.time_base = context.time_base
        self._container.mux(self._stream.encode(video_frame))
        self._frames_encoded = index + 1

    def _time_of(self, index: int) -> Fraction:
        """When frame `index` is shown (the video's end for index = frames written), in seconds."""
        return frame_time(index, self.frame_rate, self.frame_times)

    def _flushed_packets(self) -> list[Any]:
        """The encoder's last packets, with x265's decoding times repaired for a stream of under 3 frames.

        x265 learns its B-frame delay from the third frame's time; before that its packets carry an unset
        decoding time (a different one each run, which the MP4 muxer refuses). Such a short stream holds no
        reordered frame, so each packet is decoded when it is shown.
        """
        packets = self._stream.encode(None)
        if self.preset.encoder == "libx265" and self._frames_encoded < 3:
            for packet in packets:
                packet.dts = packet.pts
        return packets

    def _finalize(self) -> None:
        """Flush the encoder, copy the audio up to the last frame encoded, and write the trailer.

        After an encoder error (which `close()` raises as EncoderError) the file is only closed, quietly. A full
        disk or the file size limit raises StorageError.
        """
        failed = self._failed
        try:
            if not failed:
                self._container.mux(self._flushed_packets())
                self._container.start_encoding()  # the header, for a file with no frame
                if self._audio is not None:
                    self._audio.finish(self._time_of(self._frames_encoded))
        except OSError as error:
            failed = True
            check_storage(self.path, error)
            raise
        finally:
            if self._audio is not None:
                self._audio.close()
            try:
                self._container.close()
            except self._av.FFmpegError as error:
                if not failed:
                    if isinstance(error, OSError):
                        check_storage(self.path, error)
                    raise
