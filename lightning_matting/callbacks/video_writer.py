"""VideoWriterCallback: writes the named outputs of predict (and of validation) as one file per video."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.data.readers import VideoInfo
from lightning_matting.data.sampling import frame_ranges, splits_videos
from lightning_matting.outputs import check_output_names, straight_rgba
from lightning_matting.writers import AVWriter, FrameWriter, ImageSequenceWriter, VideoWriter
from lightning_matting.writers.pyav import ALPHA_CODECS, PRESETS
from lightning_matting.writers.segments import (
    SegmentedWriter,
    finalized_segments,
    join_parts,
    join_pieces,
    parts_folder,
    piece_path,
    segment_frames_for,
)

MANIFEST = ".matting-run.json"  # in <output_dir>/<video>/ while a predict run of that video is unfinished

# The container each OpenCV fourcc is written in unless `extension` says otherwise.
_VIDEO_EXTENSIONS = {"mp4v": "mp4", "FFV1": "mkv", "MJPG": "avi", "XVID": "avi"}


class VideoWriterCallback(BasePredictionWriter):
    """Writes each predicted output to `<output_dir>/<video>/<output>.<ext>` (or a folder of images).

    Predict: writers open at a video's first batch and close after its last frame, so any number of
    videos run with a bounded number of open files; every batch is handed to `add_batch` (conversion on
    the device, encoding on background threads). On an exception or Ctrl-C every open writer is closed,
    leaving playable files with every frame predicted before it. Existing outputs are refused unless
    `overwrite=True`. Video metadata (fps, size, frame count) comes from the datamodule's (or the
    dataset's) `videos`.

    Validation (fit and validate): the outputs of the first `val_videos` validation videos go to
    `<output_dir>/val/epoch=<E>/<video>/` (`epoch=<E>-step=<S>` when validation runs within an epoch),
    on rank zero, not during the sanity check unless `log_sanity_check`. Each finished file is handed to
    the logger: WandbLogger.log_video, MLFlowLogger artifacts, TensorBoard its first frame as an image
    (its add_video needs moviepy < 2); CSV or no logger: the files only.

    Formats: OpenCV video with `fourcc` (default mp4v in .mp4; FFV1 in .mkv is lossless); with `codec`
    (h264, hevc, prores4444, vp9, ffv1) PyAV's AVWriter with that preset and `codec_options` (extra
    `[av]`), and with `audio=True` com and fgr carry the source video's audio. `format="image_sequence"`
    writes numbered images (`extension` png by default). `alpha`: com as RGBA [fgr * (pha > 0), pha]
    (straight alpha) instead of a composite; the default for image sequences, and for video it needs
    an alpha codec (prores4444, vp9, ffv1).

    Hard kills (SIGKILL, OOM killer, preemption): predict video is written in finalized segments of
    `segment_seconds` (`<output>.<ext>.parts/00000.<ext>`, ...; 0 or None: one file, as OpenCV leaves
    it), joined by stream copy into `<output>.<ext>` when the video is done; images are renamed into
    place once complete. A killed run loses at most the segment being written. `resume=True` reruns
    the same command from the first frame not safely written (the datamodule's `resume_from`); a
    manifest `<output_dir>/<video>/.matting-run.json` of the source, model and output settings makes
    a resume with other settings fail with a ValueError naming what changed. Parts and manifests are
    removed when the run succeeds. `audio=True` outputs are written unsegmented.

    Distributed predict (strategy="ddp", any number of devices and nodes; the outputs on a filesystem every
    rank sees): with at least as many videos as ranks, each rank predicts and writes whole videos (balanced by
    frame count); with fewer, each rank writes a contiguous range of every video as a piece
    (`<output>.<ext>.parts/from-<first frame>.<ext>`, itself segmented), and rank zero joins the pieces in
    order when every rank is done. Needs a datamodule with `videos` whose predict loader gives each rank its
    share (VideoMattingDataModule does). `resume=True` is single-device only.

    Example:
        >>> writer = VideoWriterCallback("outputs", outputs=["com", "pha"])
        >>> trainer = Trainer(callbacks=[writer])
        >>> trainer.predict(MattingModule(...), datamodule=dm, return_predictions=False)
    """

    def __init__(
        self,
        output_dir: str | Path = "outputs",
        outputs: Sequence[str] = ("com", "pha"),
        format: Literal["video", "image_sequence"] = "video",
        fourcc: str = "mp4v",
        extension: str | None = None,
        overwrite: bool = False,
        queue_size: int = 4,
        val_videos: int = 1,
        log_sanity_check: bool = False,
        codec: str | None = None,
        codec_options: dict[str, str] | None = None,
        alpha: bool | None = None,
        audio: bool = False,
        segment_seconds: float | None = 2.0,
        resume: bool = False,
    ):
        super().__init__(write_interval="batch")
        if segment_seconds is not None and (
            isinstance(segment_seconds, bool)
            or not isinstance(segment_seconds, int | float)
            or segment_seconds < 0
        ):
            raise ValueError(
                f"segment_seconds must be a number of seconds >= 0 (0 or None: unsegmented), got {segment_seconds!r}"
            )
        if format not in ("video", "image_sequence"):
            raise ValueError(f"format must be 'video' or 'image_sequence', got {format!r}")
        if codec is not None and codec not in PRESETS:
            raise ValueError(
                f"codec must be one of {', '.join(PRESETS)} (PyAV), or None for OpenCV, got {codec!r}"
            )
        self.alpha = format == "image_sequence" if alpha is None else alpha
        if self.alpha and format == "video" and codec not in ALPHA_CODECS:
            raise ValueError(
                f"alpha video needs codec= one of {', '.join(ALPHA_CODECS)} (OpenCV and codec {codec!r} carry no "
                "alpha), or format='image_sequence'"
            )
        if audio and (codec is None or format != "video"):
            raise ValueError("audio=True needs PyAV video output: give codec= one of " + ", ".join(PRESETS))
        if isinstance(val_videos, bool) or not isinstance(val_videos, int) or val_videos < 0:
            raise ValueError(
                f"val_videos must be an int >= 0 (validation videos written per epoch), got {val_videos!r}"
            )
        self.output_dir = Path(output_dir)
        self.outputs = check_output_names(outputs)
        self.format = format
        self.fourcc = fourcc
        self.codec = codec
        self.codec_options = codec_options
        self.audio = audio
        if extension is None:
            if format == "image_sequence":
                extension = "png"
            elif codec is not None:
                extension = PRESETS[codec].extensions[0]
            else:
                extension = _VIDEO_EXTENSIONS.get(fourcc, "mkv")
        self.extension = extension
        self.overwrite = overwrite
        self.queue_size = queue_size
        self.val_videos = val_videos
        self.log_sanity_check = log_sanity_check
        self.segment_seconds = segment_seconds or 0
        self.resume = resume
        self._starts: dict[str, int] | None = None
        self._videos: list[VideoInfo] = []
        self._ranges: dict[str, range] | None = None  # the frames of each video this process writes
        self._piece_starts: dict[
            str, list[int]
        ] = {}  # distributed, videos shared by ranks: each piece's first frame
        self._predict: _VideoFiles | None = None
        self._validation: _VideoFiles | None = None

    @property
    def written(self) -> dict[str, dict[str, Path]]:
        """The files of the last predict run: {video: {output: path}}."""
        return self._predict.paths if self._predict is not None else {}

    def output_path(self, root: Path, video: str, output: str) -> Path:
        """Where `output` of `video` goes under `root`: a file for video, a folder for image sequences."""
        if self.format == "image_sequence":
            return root / video / output
        return root / video / f"{output}.{self.extension}"

    def output_paths(self, root: Path, video: str) -> dict[str, Path]:
        """{output: where it goes} for every output of `video` under `root`."""
        return {output: self.output_path(root, video, output) for output in self.outputs}

    def segment_frames(self, info: VideoInfo) -> int:
        """Frames per predict segment of `info`'s video files; 0: unsegmented (images, audio, or seconds 0)."""
        if self.format != "video" or self.audio or not self.segment_seconds:
            return 0
        return segment_frames_for(info.fps, self.segment_seconds)

    def open_writer(self, path: Path, info: VideoInfo, output: str, start: int = 0) -> FrameWriter:
        """A writer for one output of one video, in this callback's format (images numbered from `start`)."""
        if self.format == "image_sequence":
            return ImageSequenceWriter(
                path,
                self.extension,
                width=info.width,
                height=info.height,
                start_index=start,
                queue_size=self.queue_size,
            )
        if self.codec is not None:
            audio_from = info.source if self.audio and output in ("com", "fgr") else None
            return AVWriter(
                path,
                info.fps,
                info.width,
                info.height,
                codec=self.codec,
                options=self.codec_options,
                audio_from=audio_from,
                queue_size=self.queue_size,
            )
        return VideoWriter(
            path, info.fps, info.width, info.height, fourcc=self.fourcc, queue_size=self.queue_size
        )

    def _network_outputs(self) -> tuple[str, ...]:
        """What the module must compute: an alpha com is built here from pha and fgr."""
        if self.alpha and "com" in self.outputs:
            return tuple(dict.fromkeys([name for name in self.outputs if name != "com"] + ["pha", "fgr"]))
        return self.outputs

    def _replace_or_refuse(self, paths: list[Path]) -> None:
        for path in self._refuse_existing(paths):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _refuse_existing(self, paths: list[Path]) -> list[Path]:
        """The `paths` that exist (to be replaced); a FileExistsError naming them unless `overwrite`."""
        existing = [path for path in paths if path.exists()]
        if existing and not self.overwrite:
            shown = ", ".join(str(path) for path in existing[:4]) + (" ..." if len(existing) > 4 else "")
            raise FileExistsError(
                f"VideoWriterCallback: {len(existing)} output(s) exist already ({shown}); choose another "
                "output_dir or pass overwrite=True to replace them"
            )
        return existing

    # ---- predict ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if hasattr(pl_module, "request_outputs") and (stage == "predict" or self.val_videos > 0):
            pl_module.request_outputs(self._network_outputs())
        if stage in ("fit", "validate") and self.val_videos > 0 and trainer.is_global_zero:
            self._replace_or_refuse([self.output_dir / "val"])  # before any training step is spent
        self._starts, self._ranges, self._piece_starts = None, None, {}
        datamodule = getattr(trainer, "datamodule", None)
        if stage == "predict" and trainer.world_size > 1 and not getattr(datamodule, "videos", None):
            raise ValueError(
                f"VideoWriterCallback: distributed predict (world_size {trainer.world_size}) needs a datamodule "
                "with `videos` whose loader gives each rank its share of the frames (VideoMattingDataModule)"
            )
        if stage == "predict" and getattr(datamodule, "videos", None):
            self._prepare_predict(trainer, pl_module)  # before the datamodule's loader is made

    def _prepare_predict(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Refuse or clear existing outputs, or (resume) find where each video continues and tell the data;
        then the frames this process writes."""
        videos = _find_videos(trainer, "predict")
        if trainer.world_size > 1:
            starts = self._prepare_distributed(trainer, videos)
        else:
            starts = self._prepare_single(trainer, pl_module, videos)
        ranks = frame_ranges([info.num_frames for info in videos], trainer.world_size, list(starts.values()))
        self._videos, self._starts = videos, starts
        self._ranges = {info.name: ranks[trainer.global_rank][v] for v, info in enumerate(videos)}
        if splits_videos(len(videos), trainer.world_size):
            self._piece_starts = {
                info.name: [share[v].start for share in ranks if len(share[v])]
                for v, info in enumerate(videos)
            }

    def _prepare_distributed(self, trainer: L.Trainer, videos: list[VideoInfo]) -> dict[str, int]:
        """Every rank checks for existing outputs, then rank zero clears them; every video starts at frame 0."""
        if self.resume:
            raise ValueError(
                f"VideoWriterCallback(resume=True) works on one device only, not with world_size "
                f"{trainer.world_size}: rerun with resume=False and overwrite=True (or resume with devices=1)"
            )
        total = sum(info.num_frames for info in videos)
        if total < trainer.world_size:
            raise ValueError(
                f"VideoWriterCallback: the predict videos hold {total} frame(s) in all, fewer than the "
                f"{trainer.world_size} ranks (Lightning needs one per rank): run with devices <= {max(total, 1)}"
            )
        if self.audio and splits_videos(len(videos), trainer.world_size):
            raise ValueError(
                f"VideoWriterCallback(audio=True) needs whole videos per rank: {len(videos)} video(s) for "
                f"world_size {trainer.world_size} are split across ranks; use audio=False or fewer devices"
            )
        leftovers = []
        for info in videos:
            paths = list(self.output_paths(self.output_dir, info.name).values())
            leftovers += [self.output_dir / info.name / MANIFEST] + [parts_folder(p) for p in paths] + paths
        self._refuse_existing(leftovers)  # on every rank, before any rank removes anything
        trainer.strategy.barrier("VideoWriterCallback: outputs checked")
        if trainer.is_global_zero:
            self._replace_or_refuse(leftovers)
        trainer.strategy.barrier("VideoWriterCallback: outputs cleared")
        datamodule = getattr(trainer, "datamodule", None)
        if hasattr(datamodule, "resume_from"):
            datamodule.resume_from({})  # every rank's share starts where the callback expects it
        return {info.name: 0 for info in videos}

    def _prepare_single(
        self, trainer: L.Trainer, pl_module: L.LightningModule, videos: list[VideoInfo]
    ) -> dict[str, int]:
        starts = {}
        for info in videos:
            folder = self.output_dir / info.name
            paths = list(self.output_paths(self.output_dir, info.name).values())
            fingerprint = _fingerprint(self, info, trainer, pl_module)
            manifest = folder / MANIFEST
            if self.resume and manifest.is_file():
                previous = json.loads(manifest.read_text())
                _check_same_run(info.name, previous["fingerprint"], fingerprint)
                starts[info.name] = self._resume_point(info, paths, previous)
            else:
                leftovers = [manifest] + [parts_folder(path) for path in paths] + paths
                self._replace_or_refuse(leftovers)
                starts[info.name] = 0
            if starts[info.name] < info.num_frames or not manifest.is_file():
                _write_json(manifest, {"fingerprint": fingerprint, "complete": False})
        datamodule = getattr(trainer, "datamodule", None)
        resumed = {name: start for name, start in starts.items() if start}
        if resumed and not hasattr(datamodule, "resume_from"):
            raise ValueError(
                "VideoWriterCallback(resume=True) needs a datamodule with resume_from "
                "(VideoMattingDataModule) to start videos at their first missing frame"
            )
        if hasattr(datamodule, "resume_from"):
            datamodule.resume_from(resumed)
        if resumed:
            rank_zero_info(f"VideoWriterCallback: resuming at frames {resumed}")
        return starts

    def _resume_point(self, info: VideoInfo, paths: list[Path], manifest: dict) -> int:
        """The first frame not safely written in every output; later partial files are removed."""
        if manifest.get("complete") and all(path.exists() for path in paths):
            for path in paths:
                shutil.rmtree(parts_folder(path), ignore_errors=True)
            return info.num_frames
        segment = self.segment_frames(info)
        done = []
        for path in paths:
            if self.format == "image_sequence":
                done.append(_contiguous_images(path, self.extension))
            elif segment:
                parts = parts_folder(path)
                done.append(min(len(finalized_segments(parts, self.extension)) * segment, info.num_frames))
            else:
                done.append(0)  # an unsegmented file is finalized only at the end
        start = min(done)
        for path in paths:
            if self.format == "video":
                path.unlink(missing_ok=True)  # a join that did not finish
            if segment and parts_folder(path).is_dir():
                for file in parts_folder(path).iterdir():
                    if not file.name[0].isdigit() or int(file.name.split(".")[0]) * segment >= start:
                        file.unlink()
        if segment and start < info.num_frames:
            start -= start % segment  # a short last segment exists only at the very end
        return start

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.predict_loop.return_predictions:
            warnings.warn(
                "trainer.predict(return_predictions=True) keeps every predicted frame in memory, which a long "
                "video does not fit; the videos are written by VideoWriterCallback: pass return_predictions=False",
                stacklevel=1,
            )
        if self._starts is None:
            self._prepare_predict(trainer, pl_module)
        self._predict = _VideoFiles(
            self, self.output_dir, self._videos, ranges=self._ranges, pieces=bool(self._piece_starts)
        )
        for info in self._videos:  # every frame written before (a run killed while joining): finish them
            if trainer.world_size == 1 and self._starts[info.name] >= info.num_frames:
                self._predict.finish(info)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._predict.add(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict.close_all()
        for video, paths in self._predict.paths.items():
            done, frames = self._predict.next_index[video], self._ranges[video]
            if done < frames.stop:
                warnings.warn(
                    f"VideoWriterCallback: {video} has frames {frames.start} to {done - 1} of "
                    f"{frames.start} to {frames.stop - 1}",
                    stacklevel=1,
                )
            for output, path in paths.items():
                rank_zero_info(f"{output}: {path} ({done} frames)")
        for video in self._predict.videos:
            manifest = self.output_dir / video / MANIFEST
            if manifest.is_file() and json.loads(manifest.read_text()).get("complete"):
                manifest.unlink()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Distributed predict of videos shared by ranks: once every rank is done, rank zero joins the pieces."""
        if stage != "predict" or not self._piece_starts:
            return
        trainer.strategy.barrier("VideoWriterCallback: every piece written")
        if not trainer.is_global_zero or self.format != "video":
            return
        for info in self._videos:
            for output in self.outputs:
                path = self.output_path(self.output_dir, info.name, output)
                fourcc = None if self.codec else self.fourcc
                join_pieces(path, self._piece_starts[info.name], info.fps, fourcc)
                rank_zero_info(f"{output}: {path} ({info.num_frames} frames from {trainer.world_size} ranks)")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Finalize every open file so that it plays and holds every frame predicted so far."""
        for files in (self._predict, self._validation):
            if files is not None:
                files.close_all(reason=f"{type(exception).__name__}")

    # ---- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation = None
        skip = trainer.sanity_checking and not self.log_sanity_check
        if self.val_videos == 0 or skip or not trainer.is_global_zero:
            return
        if trainer.sanity_checking:
            folder = "sanity_check"
        elif trainer.state.fn == "fit" and trainer.val_check_batch != trainer.num_training_batches:
            folder = f"epoch={trainer.current_epoch}-step={trainer.global_step}"
        else:
            folder = f"epoch={trainer.current_epoch}"
        videos = _find_videos(trainer, "validate")[: self.val_videos]
        self._validation = _VideoFiles(self, self.output_dir / "val" / folder, videos, keep_first_frames=True)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            self._validation is not None
            and isinstance(outputs, dict)
            and outputs.get("video") in self._validation.videos
        ):
            self._validation.add(outputs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation is None:
            return
        self._validation.close_all()
        for video, paths in self._validation.paths.items():
            for output, path in paths.items():
                _hand_to_loggers(
                    trainer, f"val/{video}/{output}", path, self._validation.first_frames[video][output]
                )
        self._validation = None


class _VideoFiles:
    """The writers of one run under `root`: opened at a video's first batch, closed after its last frame."""

    def __init__(
        self,
        callback: VideoWriterCallback,
        root: Path,
        videos: list[VideoInfo],
        keep_first_frames=False,
        ranges: dict[str, range] | None = None,
        pieces: bool = False,
    ):
        self.callback = callback
        self.root = root
        self.videos = {info.name: info for info in videos}
        self.paths: dict[str, dict[str, Path]] = {}
        self.segmented = ranges is not None  # predict: segments, a manifest, resumable
        self.pieces = pieces  # distributed, each rank writes a range of every video: joined by rank zero
        self.next_index = {name: frames.start for name, frames in (ranges or {}).items()}
        self.stop = {name: frames.stop for name, frames in (ranges or {}).items()}
        self.first_frames: dict[str, dict[str, torch.Tensor]] | None = {} if keep_first_frames else None
        self._open: dict[str, dict[str, FrameWriter]] = {}

    def add(self, prediction: dict[str, Any]) -> None:
        """Hand a batch of predictions {output: [B,C,H,W], "video", "index"} to its video's writers;
        a batch of no frames (only warm-up) writes nothing."""
        video, index = prediction["video"], prediction["index"]
        if len(index) == 0:
            return
        if video not in self.videos:
            raise KeyError(
                f"VideoWriterCallback: no metadata for video {video!r}; known: {sorted(self.videos)}"
            )
        first, expected = int(index[0]), self.next_index.get(video, 0)
        stop = self.stop.get(video, self.videos[video].num_frames)
        if first != expected or first + len(index) > stop:
            raise RuntimeError(
                f"VideoWriterCallback: {video} got frames {first} to {first + len(index) - 1} where frame "
                f"{expected} comes next (this process writes frames up to {stop - 1}); batches must be "
                "consecutive frames in order (VideoBatchSampler, no shuffle; distributed: each rank's share)"
            )
        if video not in self._open:
            self._open[video] = self._open_writers(self.videos[video])
        frames = {output: self._frames(prediction, output) for output in self._open[video]}
        if self.first_frames is not None and first == 0:
            self.first_frames[video] = {
                output: batch[0].detach().float().cpu() for output, batch in frames.items()
            }
        for output, writer in self._open[video].items():
            writer.add_batch(frames[output], hand_over=True)  # predictions are fresh tensors, never reused
        self.next_index[video] = first + len(index)
        if self.next_index[video] >= stop:
            _close_all(self._open.pop(video).values())
            if self.segmented and not self.pieces:
                self.finish(self.videos[video])

    def finish(self, info: VideoInfo) -> None:
        """Join the segments of a video whose every frame is written, and mark its manifest complete."""
        self.paths[info.name] = self.callback.output_paths(self.root, info.name)
        for path in self.paths[info.name].values():
            if parts_folder(path).is_dir() and not path.exists():
                join_parts(path, info.fps, None if self.callback.codec else self.callback.fourcc)
            shutil.rmtree(parts_folder(path), ignore_errors=True)
        manifest = self.root / info.name / MANIFEST
        if manifest.is_file():
            _write_json(manifest, json.loads(manifest.read_text()) | {"complete": True})

    def _frames(self, prediction: dict[str, Any], output: str) -> torch.Tensor:
        if output == "com" and self.callback.alpha:
            return straight_rgba(prediction["fgr"], prediction["pha"])
        return prediction[output]

    def _open_writers(self, info: VideoInfo) -> dict[str, FrameWriter]:
        paths = self.callback.output_paths(self.root, info.name)
        start = self.next_index.get(info.name, 0)
        segment = self.callback.segment_frames(info) if self.segmented else 0
        piece = self.pieces and self.callback.format == "video"  # images: each rank numbers its own
        writers: dict[str, FrameWriter] = {}
        try:
            for output, path in paths.items():
                file = piece_path(path, start) if piece else path
                file.parent.mkdir(parents=True, exist_ok=True)
                if segment:
                    writers[output] = SegmentedWriter(
                        file,
                        lambda file, output=output: self.callback.open_writer(file, info, output),
                        segment,
                        info.fps,
                        fourcc=None if self.callback.codec else self.callback.fourcc,
                        start_segment=0 if piece else start // segment,
                    )
                else:
                    writers[output] = self.callback.open_writer(file, info, output, start)
        except BaseException:
            _close_all(writers.values(), reason="a writer failed to open")
            raise
        self.paths[info.name] = paths
        return writers

    def close_all(self, reason: str | None = None) -> None:
        """Finalize every open writer; `reason` (an exception is propagating) turns close errors into warnings."""
        for video in list(self._open):
            writers = self._open.pop(video).values()
            if reason is None:
                _close_all(writers)
                continue
            for writer in writers:  # a segmented file keeps its full segments for a resume
                try:
                    writer.abort() if isinstance(writer, SegmentedWriter) else writer.close()
                except Exception as error:  # noqa: BLE001 - the others must still be closed
                    warnings.warn(f"closing {writer.path} after {reason} failed: {error!r}", stacklevel=2)


def _close_all(writers: Any, reason: str | None = None) -> None:
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


def _write_json(path: Path, content: dict) -> None:
    """Write `content` to `path` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".writing-{path.name}")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(temporary, path)


def _contiguous_images(folder: Path, extension: str) -> int:
    """How many images 00000, 00001, ... exist in `folder` before the first missing one."""
    count = 0
    while (folder / f"{count:05d}.{extension}").is_file():
        count += 1
    return count


def _file_identity(path: object) -> str | None:
    """`path` with its size and modification time (a replaced file differs), or None."""
    if not isinstance(path, str | Path) or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return f"{Path(path).resolve()} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})"


def _fingerprint(
    callback: VideoWriterCallback, info: VideoInfo, trainer: L.Trainer, pl_module: L.LightningModule
) -> dict[str, str]:
    """What a resumed run must share with the interrupted one, as {name: text}."""
    weights = hashlib.sha256()
    for name, tensor in pl_module.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    hparams = dict(getattr(pl_module, "hparams", {}))
    datamodule = getattr(trainer, "datamodule", None)
    settings = {
        "video": (info.name, str(info.fps), info.width, info.height, info.num_frames),
        "source": _file_identity(info.source) or info.source,
        "data": {key: getattr(datamodule, key, None) for key in ("target", "resize", "align")},
        "model": (type(pl_module).__name__, getattr(pl_module, "variant", None)),
        "model.hparams": hparams,
        "model.checkpoint": _file_identity(hparams.get("checkpoint")),
        "model.weights": weights.hexdigest(),
        "outputs": callback.outputs,
        "format": (callback.format, callback.extension, callback.alpha, callback.audio),
        "codec": (callback.fourcc, callback.codec, callback.codec_options),
        "segment_frames": callback.segment_frames(info),
    }
    return {key: json.dumps(value, sort_keys=True, default=str) for key, value in settings.items()}


def _check_same_run(video: str, previous: dict[str, str], current: dict[str, str]) -> None:
    changed = [
        key for key in sorted(previous.keys() | current.keys()) if previous.get(key) != current.get(key)
    ]
    if changed:
        details = "; ".join(f"{key}: was {previous.get(key)}, now {current.get(key)}" for key in changed)
        raise ValueError(
            f"VideoWriterCallback: cannot resume {video}: {', '.join(changed)} changed since the interrupted run "
            f"({details}); rerun with the same settings, or pass resume=False and overwrite=True to start again"
        )


def _hand_to_loggers(trainer: L.Trainer, key: str, path: Path, first_frame: torch.Tensor) -> None:
    """Give a finished validation file to each logger that can show it; a missing package only warns."""
    for logger in trainer.loggers:
        try:
            if hasattr(logger, "log_video"):  # WandbLogger
                logger.log_video(key, [str(path)], step=trainer.global_step)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=str(Path(key).parent))
            elif isinstance(logger, TensorBoardLogger):
                image = (
                    first_frame.clamp(0, 1).expand(3, -1, -1)
                    if first_frame.shape[0] == 1
                    else first_frame[:3]
                )
                logger.experiment.add_image(key, image, trainer.global_step)
        except ImportError as error:
            warnings.warn(
                f"VideoWriterCallback: {type(logger).__name__} cannot log {path}: {error}", stacklevel=2
            )


def _find_videos(trainer: L.Trainer, stage: str) -> list[VideoInfo]:
    """Video metadata: the datamodule's `videos` (predict), else the stage's datasets' `videos`."""
    datamodule = getattr(trainer, "datamodule", None)
    if stage == "predict" and datamodule is not None and getattr(datamodule, "videos", None):
        return list(datamodule.videos)
    loaders = trainer.predict_dataloaders if stage == "predict" else trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, Sequence) else [loaders]
    videos = [
        info for loader in loaders if loader is not None for info in getattr(loader.dataset, "videos", [])
    ]
    if not videos:
        raise ValueError(
            "VideoWriterCallback needs video metadata (name, fps, size, frame count): use "
            "VideoMattingDataModule, or a dataset with a `videos` list of VideoInfo"
        )
    return videos
