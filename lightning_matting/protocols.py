"""The two small protocols through which our datamodule and module add to `VideoWriterCallback`.

The callback writes any module's step outputs without them (frames in arrival order, fps from its `fps`).
A datamodule that implements `PredictVideoSource` adds exact metadata (fps, size, frame count, audio
source), resume points and a rank's share of one long video; a module that implements `PredictVideoModule`
computes only the outputs that writers request, warms its recurrent state up before a share that starts
mid-video and may ask for torch's thread count during predict. Features that need one (resume, distributed predict) fail with an error naming it when it is
missing; nothing is probed silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from lightning_matting.metadata import VideoInfo


@runtime_checkable
class PredictVideoSource(Protocol):
    """A datamodule whose predict batches are consecutive frames of named videos (`VideoMattingDataModule`).

    Its predict batches are `MattingBatch`es (`lightning_matting.data.batch`): the frames of one video at a time,
    in order, with `video` (the video's name per frame) and `index` (int64 [B], the frame indices).
    """

    @property
    def videos(self) -> Sequence[VideoInfo]:
        """Every predict video, in loader order, once `setup("predict")` ran."""
        ...

    def plan_predict(
        self, todo_frames: Mapping[str, Sequence[range]], rank: int, world_size: int
    ) -> list[list[list[range]]]:
        """Fix the frames the predict loader gives, before it is made.

        Args:
            todo_frames: {video name: sorted disjoint ranges of frames to predict} (a resumed run: the frames
                not written yet); other videos: every frame.
            rank: This process's rank.
            world_size: The number of processes.

        Returns:
            `ranges[rank][video]`: the ranges of frames each process of the trainer predicts and writes (every
            frame to do once). The loader made afterwards gives this process its ranges, each preceded by the
            module's warm-up frames where it starts mid-video.
        """
        ...

    def predict_inputs(self, video: str) -> Mapping[str, object]:
        """Everything besides the source that changes `video`'s pixels ({"background": path, "target": ...}):
        a resumed run must be given the same (files are compared by path, size and modification time)."""
        ...


@runtime_checkable
class LiveVideoSource(Protocol):
    """A datamodule that may predict a live source (`VideoMattingDataModule`): a video of unknown length, not in
    `PredictVideoSource.videos`, whose frames are written as they come at the stream's frame rate."""

    @property
    def live_video(self) -> VideoInfo | None:
        """The live video's name, size and frame rate (num_frames 0) once `setup("predict")` ran; None: none."""
        ...


@runtime_checkable
class PredictVideoModule(Protocol):
    """A LightningModule that computes named outputs on request and may keep a recurrent state (`MattingModule`).

    With `VideoMattingDataModule` its `predict_step` and `validation_step` receive `MattingBatch`es; the
    frames of a batch's `warmup` (when set, the first ones) build the state and are not returned.
    """

    @property
    def predict_warmup_frames(self) -> int:
        """Frames to predict, unwritten, before a share that starts mid-video (0: the model has no state)."""
        ...

    def request_outputs(self, names: Sequence[str]) -> None:
        """Compute these outputs (com, pha, fgr, err, ref, seg) in `predict_step` and `validation_step`."""
        ...


@runtime_checkable
class PredictThreadsModule(Protocol):
    """A LightningModule that asks for torch's intra-op thread count during predict (`MattingModule(threads=)`)."""

    @property
    def predict_threads(self) -> int | None:
        """torch's intra-op threads during predict (>= 1), or None: the writer callback gives torch the cores
        left after DataLoader workers and encoder threads (or keeps OMP_NUM_THREADS)."""
        ...


@runtime_checkable
class MattingNetwork(Protocol):
    """A matting network as `MattingModule` calls it: `net(src, bgr)` with src and bgr [B,3,H,W] float in [0,1],
    returning the BackgroundMattingV2 tuple (pha [B,1,H,W], fgr [B,3,H,W], ...); any `nn.Module` with that
    call fits."""

    def forward(self, src: Any, bgr: Any) -> Any:
        """The network's outputs for a batch of frames and their plates."""
        ...
