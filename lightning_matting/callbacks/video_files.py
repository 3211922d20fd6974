"""VideoFiles: the open writers of one run, a video's files at a time (Lightning-free)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_matting.metadata import VideoInfo
from lightning_matting.run.existing import refuse_existing
from lightning_matting.run.manifest import RunManifest
from lightning_matting.video_names import VideoFolders
from lightning_matting.writers.chunks import count_frames, parts_folder
from lightning_matting.writers.output_format import OutputFormat
from lightning_matting.writers.segments import SegmentedWriter


class VideoFiles:
    """Writes the named outputs of a run's videos under `root`: `<root>/<folder>/<output>.<ext>`.

    Each video's folder is its name made one safe folder name (`folder_name`; a changed name warns once), and
    two names of one run in one folder are refused.

    A video's writers open at its first frames and close after its last: the last frame of its ranges when
    its metadata is known, else when the next video begins or at `close_all`. Frames of a video must arrive
    in order and together (a video seen again after another began is an error); a known video's frames carry
    their index, which is checked, and may jump to the start of its next range (a resumed run fills the gaps
    between finished chunks; writers for the next range open there). An unknown video takes its frame size
    from its first frames and `fps`.

    Args:
        output_format: How the files are stored.
        root: The folder of the videos' folders.
        outputs: The output names: every `add` gives each of them.
        fps: The frame rate of videos without metadata (frames/s).
        videos: Metadata of known videos, by name.
        ranges: The frames of each known video that this run writes, as sorted disjoint ranges (default: all).
        segmented: Resumable video: finalized chunks (`segment_seconds`), joined when a video is done.
        shared: Processes share the videos: each writes its ranges as chunks, joined later by one of them
            (`join`).
        overwrite: Replace existing outputs of unknown videos (known ones are checked before the run).
    """

    def __init__(
        self,
        output_format: OutputFormat,
        root: Path,
        outputs: Sequence[str],
        fps: Fraction = Fraction(30),
        videos: Mapping[str, VideoInfo] | None = None,
        ranges: Mapping[str, Sequence[range]] | None = None,
        segmented: bool = False,
        shared: bool = False,
        overwrite: bool = False,
    ):
        self.format = output_format
        self.root = root
        self.outputs = tuple(outputs)
        self.fps = fps
        self.known = dict(videos or {})
        self.videos = dict(self.known)  # known, and unknown ones once begun
        self.ranges = {video: [r for r in ranges if len(r)] for video, ranges in (ranges or {}).items()}
        self.segmented = segmented
        self.shared = shared
        self.overwrite = overwrite
        self.paths: dict[str, dict[str, Path]] = {}  # every video begun: {output: path}
        self.next_index: dict[str, int] = {}  # every video begun: its next frame
        self.written: dict[str, int] = {}  # every video begun: frames written by this run
        self._open: dict[str, dict[str, Any]] = {}
        self._chunked: set[str] = set()  # videos written as chunks
        self._folders = VideoFolders()
        self._done: set[str] = set()

    def frames_to_write(self, video: str) -> list[range]:
        """The frames of a known `video` this run writes (every frame unless `ranges` says otherwise)."""
        if video in self.ranges:
            return self.ranges[video]
        return [range(self.known[video].num_frames)] if self.known[video].num_frames else []

    def check(self, video: str, frames: Mapping[str, Tensor]) -> None:
        """Refuse what `add` would refuse of these frames before anything of them is written.

        Args:
            video: The video's name.
            frames: {output: [N,C,H,W]}.

        Raises:
            TypeError: `video` is not a str.
            ValueError: Another video of this run has the same folder, an output is missing, the outputs differ
                in size, or one has RGBA frames these files cannot store.
        """
        self._folders.folder(video)
        missing = [output for output in self.outputs if output not in frames]
        if missing:
            raise ValueError(
                f"VideoWriterCallback: video {video!r} lacks outputs {missing}: every batch gives each of "
                f"{list(self.outputs)}; got {sorted(frames)}"
            )
        sizes = {output: tuple(frames[output].shape[-2:]) for output in self.outputs}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{output} {width}x{height}" for output, (height, width) in sizes.items())
            raise ValueError(
                f"VideoWriterCallback: the outputs of video {video!r} differ in size: {shown} (WxH); every "
                "output of a video must have one size"
            )
        for output in self.outputs:
            self.format.check_channels(output, frames[output].shape[1])

    def add(self, video: str, frames: Mapping[str, Tensor], first_index: int | None = None) -> None:
        """Write consecutive frames {output: [N,C,H,W]} of `video`, in its folder `folder_name(video)`.

        A video whose first frames are refused (here or by a writer) leaves no file behind.

        Args:
            video: The video's name.
            frames: A tensor for every output, the same N frames each (C 1, 3 or 4; float in [0,1] or uint8).
            first_index: The index of the first frame in its video, checked against the next expected one.

        Raises:
            TypeError: `video` is not a str.
            ValueError: What `check` refuses, the frame size changed, or the video was seen before another.
            RuntimeError: Frames out of order or outside this run's ranges of a known video.
        """
        self.check(video, frames)
        count = len(next(iter(frames.values())))
        if count == 0:
            return
        if video in self._done:
            raise ValueError(
                f"VideoWriterCallback: frames of video {video!r} came after those of another video; a video's "
                "frames must be consecutive (name each video once, or one video per dataloader)"
            )
        if video not in self._open:  # a video begins: one of unknown length still open ends here
            for name in [name for name in self._open if name not in self.known]:
                self._close_video(name)
        first = self._check_order(video, count, first_index)
        if video in self._open and first != self.next_index[video]:  # the next range: its own chunks
            _close_every(self._open.pop(video).values())
        begins = video not in self.written
        if video not in self._open:
            self._open[video] = self._open_writers(video, frames, first)
        info = self.videos[video]
        try:
            for output, writer in self._open[video].items():
                if tuple(frames[output].shape[-2:]) != (info.height, info.width):
                    raise ValueError(
                        f"VideoWriterCallback: output {output!r} of video {video!r} changed size: its frames "
                        f"are {info.width}x{info.height} (WxH), this batch's are {frames[output].shape[-1]}x"
                        f"{frames[output].shape[-2]}; every frame of a video must have one size"
                    )
                writer.add_batch(frames[output], hand_over=True)  # each step's frames are its own tensors
        except BaseException:
            if begins and video not in self.known:
                self._discard(video)
            raise
        self.next_index[video] = first + count
        self.written[video] = self.written.get(video, 0) + count
        if video in self.known and first + count >= self.frames_to_write(video)[-1].stop:
            self._close_video(video)

    def _discard(self, video: str) -> None:
        """Close a video whose first frames were refused and remove what its writers made."""
        _close_every(self._open.pop(video).values(), reason="its first frames were refused")
        self._remove_new(video, self.paths.pop(video).values())

    def _remove_new(self, video: str, paths: Iterable[Path]) -> None:
        """Forget an unknown video that got no frame, and remove its files and its folder if left empty."""
        paths = list(paths)
        _remove(paths)
        del self.videos[video]
        folder = paths[0].parent
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def _check_order(self, video: str, count: int, first_index: int | None) -> int:
        """The first frame of a batch of `count` frames: the next one, or (known videos) a range's start."""
        if video not in self.known:
            expected = self.next_index.get(video, 0)
            first = expected if first_index is None else first_index
            if first != expected:
                raise RuntimeError(
                    f"VideoWriterCallback: {video} got frames {first} to {first + count - 1} where frame {expected} "
                    "comes next; batches must be consecutive frames in order (VideoBatchSampler, no shuffle)"
                )
            return first
        ranges = self.frames_to_write(video)
        expected = self.next_index.get(video, ranges[0].start if ranges else 0)
        first = expected if first_index is None else first_index
        after = [r for k, r in enumerate(ranges) if k and ranges[k - 1].stop == expected]  # the next range
        within = [r for r in ranges if first in r and first + count <= r.stop]
        if not within or (first != expected and not (after and first == after[0].start)):
            shown = ", ".join(f"{r.start} to {r.stop - 1}" for r in ranges) or "none"
            raise RuntimeError(
                f"VideoWriterCallback: {video} got frames {first} to {first + count - 1} where frame {expected} "
                f"comes next (this run writes frames {shown}); batches must be consecutive frames in order "
                "(VideoBatchSampler, no shuffle; distributed: each rank's share)"
            )
        return first

    def _open_writers(self, video: str, frames: Mapping[str, Tensor], first: int) -> dict[str, Any]:
        paths = self.format.paths(self.root, video, self.outputs)
        if video not in self.known:
            height, width = next(iter(frames.values())).shape[-2:]
            self.videos[video] = VideoInfo(video, self.fps, int(width), int(height), 0)
            made = [*paths.values(), *map(parts_folder, paths.values())]
            _remove(refuse_existing(made, self.overwrite))
        info = self.videos[video]
        chunked = self.segmented and (self.shared or self.format.segment_frames(info) > 0)
        writers: dict[str, Any] = {}
        try:
            for output, path in paths.items():
                writers[output] = self.format.open(path, info, output, first, chunked)
        except BaseException:
            _close_every(writers.values(), reason="a writer failed to open")
            if video not in self.known:
                self._remove_new(video, paths.values())
            raise
        if chunked:
            self._chunked.add(video)
        self.paths[video] = paths
        return writers

    def _close_video(self, video: str) -> None:
        _close_every(self._open.pop(video).values())
        self._done.add(video)
        if video not in self.known:  # its length is known now
            self.videos[video] = replace(self.videos[video], num_frames=self.next_index[video])
        if not self.shared:
            self.finish(self.videos[video])

    def finish(self, info: VideoInfo) -> None:
        """Join the chunks of a video whose every frame is written, and mark its manifest complete."""
        self.paths[info.name] = paths = self.format.paths(self.root, info.name, self.outputs)
        for output, path in paths.items():
            if parts_folder(path).is_dir() and not path.exists():
                self.format.join(path, info, output)
            shutil.rmtree(parts_folder(path), ignore_errors=True)
        RunManifest(self.root, info.name).mark_complete()

    def frames_on_disk(self, path: Path) -> int:
        """The frames the output `path` holds: its numbered images, or its video's demuxed frames (0 when absent).

        Raises:
            ValueError: The video is not readable, naming it.
        """
        if self.format.format == "image_sequence":
            extension = self.format.resolved_extension
            files = path.glob(f"*.{extension}") if path.is_dir() else ()
            return sum(1 for file in files if file.stem.isdigit())
        return count_frames(path) if path.is_file() else 0

    def close_all(self, reason: str | None = None) -> None:
        """Finalize every open writer.

        Args:
            reason: An exception is propagating: close errors become warnings, and the chunks written stay for a
                resume (beside them, a playable file of the frames from 0 on, when one process writes the video).
        """
        for video in list(self._open):
            if reason is None:
                self._close_video(video)
                continue
            for writer in self._open.pop(video).values():
                try:
                    writer.abort() if isinstance(writer, SegmentedWriter) else writer.close()
                except Exception as error:  # noqa: BLE001 - the others must still be closed
                    warnings.warn(f"closing {writer.path} after {reason} failed: {error!r}", stacklevel=2)
            if video in self._chunked and not self.shared:
                for output, path in self.paths[video].items():
                    try:
                        self.format.preview(path, self.videos[video], output)
                    except Exception as error:  # noqa: BLE001 - the chunks are what matters
                        warnings.warn(f"joining {path} after {reason} failed: {error!r}", stacklevel=2)
                        continue
                    if video not in self.known:  # no resume continues it: the playable file is all
                        shutil.rmtree(parts_folder(path), ignore_errors=True)


def _remove(paths: Iterable[Path]) -> None:
    """Remove each file or folder of `paths`, and the chunk folder of each, where they exist."""
    for path in paths:
        for made in (path, parts_folder(path)):
            if made.is_dir():
                shutil.rmtree(made)
            elif made.exists():
                made.unlink()


def _close_every(writers: Iterable[Any], reason: str | None = None) -> None:
    """Close every writer even if some fail; raise the first failure unless closing because of another."""
    first_error = None
    for writer in writers:
        try:
            writer.close()
        except Exception as error:  # noqa: BLE001 - the others must still be closed
            if reason is not None:
                warnings.warn(f"closing {writer.path} after {reason} failed: {error!r}", stacklevel=2)
            first_error = first_error or error
    if first_error is not None and reason is None:
        raise first_error
