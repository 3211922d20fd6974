"""MattingModule: a LightningModule around any matting network, predicting named outputs per batch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_matting.cpu import cpu_info
from lightning_matting.data.batch import MattingBatch
from lightning_matting.full_scale import FULL_SCALE
from lightning_matting.metrics import MSE, SAD, ConnectivityError, DtSSD, GradientError
from lightning_matting.models import load_model
from lightning_matting.models.adapters import BGMv2Adapter, make_adapter, parameter_groups
from lightning_matting.models.loading import VARIANTS, VariantName
from lightning_matting.models.networks import RUNTIMES, Inference, InferenceNetworks, check_inference
from lightning_matting.models.precision import Precision, check_bf16_device, check_precision
from lightning_matting.models.weights import is_remote, resolve_checkpoint
from lightning_matting.outputs import (
    DEFAULT_TARGET_COLOR,
    OutputName,
    check_output_names,
    named_outputs,
    network_outputs_for,
)
from lightning_matting.protocols import MattingNetwork
from lightning_matting.settings import RefineSettings, TrainingSettings, settings_from
from lightning_matting.validators import check_choice, check_int

DEFAULT_OUTPUTS = ("pha", "fgr")
DEFAULT_WARMUP_FRAMES = 64  # about 2 s at 30 fps; see bench/rvm_seams.py and the README


class MattingModule(L.LightningModule):
    """Runs a matting network in `trainer.predict`, `trainer.fit` and `trainer.validate`.

    `predict_step` returns {name: [B,C,H,W] on the device for each output, "video": str, "index":
    LongTensor [B]}; `com` composites fgr over the batch's `tgt` when the data gives one, else over
    `target_color`. Recurrent models carry their state across batches of a video and restart it at frame 0;
    a share of a video that starts mid-video (a distributed rank's range, a resumed run) is preceded by
    `warmup_frames` frames that build the state and are not returned (the batch's `warmup`). Its steps take
    `MattingBatch`es (`lightning_matting.data.batch`), whose frames may be uint8 (0-255) or uint16
    (0-65535), as decoded (converted on the device), or floats in [0,1].
    Training uses the family's reference losses (BGMv2 base/refine, RVM) with Adam; validation logs SAD,
    MSE, Grad, Conn and dtSSD of the alpha (`lightning_matting.metrics` scales) under "val/" and returns
    the outputs so that a VideoWriterCallback can write them. It implements `PredictVideoModule`.

    Args:
        model: A variant (mattingbase-*, mattingrefine-* with resnet50, resnet101 or mobilenetv2;
            rvm-mobilenetv3, rvm-resnet50), a TorchScript file, or a network called as net(src, bgr)
            returning the BackgroundMattingV2 tuple.
        checkpoint: Weights for a variant: an official state dict (.pth), a Lightning checkpoint of this
            module or a TorchScript export, loaded strictly. "official" or an http(s) URL: downloaded into
            torch hub's cache folder on first use (docs/weights.md); the hyperparameters then record the
            cached file. None: untrained (a warning at predict).
        outputs: The outputs to compute (com, pha, fgr, err, ref, seg); None: what the writer callbacks
            request, or pha and fgr without one.
        target_color: The composite's background, RGB in [0, 1], when the data gives no target.
        downsample_ratio: RVM: the scale its encoder runs at; None: automatic (longest side to 512 px).
        warmup_frames: Recurrent models: frames predicted, unwritten, before a share that starts mid-video.
        inference: What eval mode (predict, validation, a direct call after `eval()`) runs. "fast": for our
            networks an inference copy with BatchNorm folded into the convolutions and, where it is
            faster, channels_last memory (BGMv2), under torch.inference_mode, so outputs carry no gradient;
            within 1e-4 of "eager" on the golden inputs (1e-5; 5e-5 with RVM's fast guided filter). The
            copy is rebuilt when the weights or refine settings change.
            "eager": the network itself, as called (gradients in eval mode). "onnxruntime" (RVM on a CPU,
            extra `[onnx]`): the network with BatchNorm folded, exported to ONNX at each frame size's first
            batch (a pause the log reports; again after the weights change, so at each validation during fit) and run by
            ONNX Runtime with torch's thread count (predict's choice in predict); within 1e-5 of "eager",
            matting pass only (no `seg`); its speed against "fast": docs/speed.md.
            "openvino" and "openvino-bf16" (on a CPU, extra `[openvino]`): RVM's matting pass, or BGMv2's
            base network with its refiner in torch, converted by OpenVINO at each frame size's first batch
            (again after the weights change) and compiled for the CPU in float32 (within 1e-4 of "eager",
            tested) or bfloat16 (CPUs with avx512_bf16 or amx_bf16; within 1e-2), with torch's thread count
            (docs/openvino.md). "openvino-int8": the same quantized to int8 by NNCF (in the extra), calibrated
            on each frame size's first batch; pha within 5e-2 of "eager" on RVM's golden clip (tested).
            "auto" (our networks): at the first batch on a CPU, times the paths the CPU and the installed
            extras allow ("fast", precision bf16, the OpenVINO ones) and keeps the fastest whose pha stays
            within 2e-3 of "fast"'s, logging each (docs/speed.md); off the CPU it runs "fast".
            Training always runs the network.
        compile: torch.compile what runs (the network in training, the inference copy in eval). The first
            batch of each input size compiles (a long pause on a CPU), and eval compiles again after the
            weights change (each validation during fit); docs/speed.md has the measured gains.
        threads: torch's intra-op threads during predict, set by the VideoWriterCallback (`predict_threads`);
            None: the cores left after DataLoader workers and writer encoder threads (at least 1), or
            OMP_NUM_THREADS when set. Restored after predict.
        precision: The number format of inference="fast" in eval: "fp32", or "bf16" (RVM's copy under bf16
            autocast with its refiner in fp32, BGMv2's with bf16 weights and activations; float32 in and out).
            bf16 pha is within 1e-2 of "eager" on the golden inputs (tested; mean error within 2e-3), and
            BGMv2 "sampling" or "thresholding" may refine other patches. On a CPU it needs bf16 instructions
            (avx512_bf16 or amx_bf16, `lightning_matting.cpu`) and is refused without them when predict or
            validation starts; on a GPU it runs. Training and `state_dict()` stay fp32.
        refine: BGMv2's refinement (`RefineSettings`: backbone_scale, mode, sample_pixels, threshold,
            kernel_size, prevent_oversampling), for variant names and TorchScript files.
        training: What `fit` trains and at which rates (`TrainingSettings`: stage, learning_rate,
            backbone_learning_rate, refiner_learning_rate, high_res_downsample_ratio).
            Either group may be a mapping of its fields, as `hparams` and checkpoints hold them.

    Raises:
        ValueError: A setting out of its allowed values, or refine settings given with an nn.Module.
        TypeError: A group that is neither its settings class nor a mapping of its fields.
        ImportError: inference="onnxruntime" without the `[onnx]` extra; an OpenVINO one
            without the `[openvino]` extra.
        ValueError: precision="bf16" or inference="openvino-bf16" on a CPU without bf16 instructions, when
            predict or validation starts.

    Example:
        >>> from pathlib import Path
        >>> import lightning as L
        >>> from lightning_matting import VideoMattingDataModule, VideoWriterCallback
        >>> module = MattingModule("mattingbase-mobilenetv2", checkpoint="demo")  # the packaged demo model
        >>> from lightning_matting.data import SyntheticSettings
        >>> data = VideoMattingDataModule(synthetic=SyntheticSettings(clips=1, size=(96, 64), frames=8))
        >>> writer = VideoWriterCallback("outputs", outputs=["pha"])
        >>> trainer = L.Trainer(logger=False, callbacks=[writer], enable_progress_bar=False)
        >>> trainer.predict(module, datamodule=data, return_predictions=False)
        >>> sorted(str(path) for path in Path("outputs").rglob("*.mp4"))
        ['outputs/synthetic_000/pha.mp4']
    """

    def __init__(
        self,
        model: VariantName | str | MattingNetwork = "mattingrefine-resnet50",
        checkpoint: str | None = None,
        outputs: Sequence[OutputName] | None = None,
        target_color: Sequence[float] = DEFAULT_TARGET_COLOR,
        downsample_ratio: float | None = None,
        warmup_frames: int = DEFAULT_WARMUP_FRAMES,
        inference: Inference = "fast",
        compile: bool = False,
        threads: int | None = None,
        precision: Precision = "fp32",
        refine: RefineSettings = RefineSettings(),
        training: TrainingSettings = TrainingSettings(),
    ):
        super().__init__()
        # threads changes the speed only: a resume on another machine must not be refused for it
        self.save_hyperparameters(
            ignore=["threads"] if isinstance(model, str | Path) else ["model", "threads"]
        )
        refine = settings_from("model.refine", refine, RefineSettings)
        training = settings_from("model.training", training, TrainingSettings)
        # the groups as plain data: a checkpoint loads without unpickling classes, hparams.yaml stays plain YAML
        self.hparams.update(refine=asdict(refine), training=asdict(training))
        options = refine.model_options()
        self.variant = str(model) if isinstance(model, str | Path) else type(model).__name__
        if isinstance(model, nn.Module):
            if options or checkpoint is not None:
                raise ValueError(
                    "checkpoint and refine options apply to a variant name or TorchScript path; for an nn.Module, "
                    f"configure and load it yourself (got checkpoint={checkpoint!r}, options={sorted(options)})"
                )
            self.net = model
        else:
            if is_remote(checkpoint) and isinstance(model, str) and model in VARIANTS:
                checkpoint = str(resolve_checkpoint(checkpoint, model))
                self.hparams["checkpoint"] = checkpoint  # a resumed run compares the file, not the name
            self.net = load_model(model, checkpoint, **options).train()  # Lightning switches modes per stage
        self.has_weights = (
            checkpoint is not None or isinstance(model, nn.Module) or Path(self.variant).is_file()
        )
        self.adapter = make_adapter(self.net, downsample_ratio)
        if threads is not None:
            check_int("threads", threads, minimum=1)
        inference = check_inference(inference, self.net, bool(compile))
        self.networks = InferenceNetworks(
            inference, bool(compile), check_precision(precision, inference, self.net)
        )
        self.threads = threads
        check_int("warmup_frames", warmup_frames, minimum=0)
        self.warmup_frames = warmup_frames
        self.target_color = _check_color(target_color)
        self.outputs = None if outputs is None else self._check_available(check_output_names(outputs))
        self.training_settings = training
        self.set_bgmv2_stage(training.stage)
        self.val_metrics = MetricCollection(
            [SAD(), MSE(), GradientError(), ConnectivityError(), DtSSD()], prefix="val/"
        )
        self._requested: tuple[str, ...] = ()
        self._state_key: tuple[str, int] | None = None
        self._state: Any = None

    def _check_available(self, names: Sequence[str]) -> tuple[str, ...]:
        missing = network_outputs_for(names) - self.adapter.provides
        if missing:
            raise ValueError(
                f"outputs {list(names)} need {sorted(missing)}, which {self.variant} does not produce "
                f"(it gives {sorted(self.adapter.provides)})"
            )
        if self.networks.inference in RUNTIMES and "seg" in network_outputs_for(names):
            raise ValueError(
                f"outputs {list(names)} need seg, and inference={self.networks.inference!r} runs RVM's matting "
                "pass only: use inference='fast' for seg"
            )
        return tuple(names)

    def request_outputs(self, names: Sequence[str]) -> None:
        """Ask for outputs (a writer callback does this at setup); refused when `outputs` excludes them."""
        names = check_output_names(
            names, argument="the outputs a writer callback requests from MattingModule"
        )
        if self.outputs is not None:
            missing = [name for name in names if name not in self.outputs]
            if missing:
                raise ValueError(
                    f"outputs {missing} are requested but MattingModule(outputs={list(self.outputs)})"
                )
            return
        self._requested = self._check_available(tuple(dict.fromkeys(self._requested + names)))

    @property
    def predict_warmup_frames(self) -> int:
        """Frames predicted, not written, before a share of a video that starts mid-video (recurrent only)."""
        return self.warmup_frames if self.adapter.recurrent else 0

    @property
    def predict_threads(self) -> int | None:
        """torch's intra-op threads asked for predict (`threads`); None: the writer callback chooses."""
        return self.threads

    @property
    def predict_outputs(self) -> tuple[str, ...]:
        """The outputs `predict_step` computes."""
        return self.outputs or self._requested or DEFAULT_OUTPUTS

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The Lightning checkpoint holds the weights: loading it must not re-read the original `.pth`."""
        key = self.CHECKPOINT_HYPER_PARAMS_KEY
        if key in checkpoint:  # a copy: Lightning may store the module's own hparams object
            checkpoint[key] = {**checkpoint[key], "checkpoint": None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Weights restored from a Lightning checkpoint (`ckpt_path=`, `load_from_checkpoint`) are trained ones."""
        self.has_weights = True

    def on_predict_start(self) -> None:
        if not self.has_weights:
            warnings.warn(
                f"MattingModule: {self.variant} has no checkpoint and predicts with untrained weights; "
                "pass checkpoint=<path to official or trained weights>",
                stacklevel=1,
            )
        self._check_inference_device()
        self._check_precision_device()
        self._state_key, self._state = None, None

    def train(self, mode: bool = True) -> MattingModule:
        """Switch modes (see nn.Module.train); entering training drops the inference copy."""
        if mode:
            self.networks.clear()
        return super().train(mode)

    def forward(self, src: Tensor, bgr: Tensor | None = None) -> dict[str, Tensor]:
        """Matte one batch of independent frames: {pha, fgr, ...} [B,C,H,W] for the predict outputs."""
        raw, _ = self._run(src, bgr, None, network_outputs_for(self.predict_outputs))
        return named_outputs(raw, self.predict_outputs, None, self.target_color)

    def predict_step(self, batch: MattingBatch, batch_idx: int = 0) -> dict[str, Any]:
        """Matte a batch of consecutive frames of one video: {name: [B,C,H,W], "video": str, "index": [B]}."""
        return self._matte(batch, self.predict_outputs)

    def on_validation_epoch_start(self) -> None:
        self._check_inference_device()
        self._check_precision_device()
        self._state_key, self._state = None, None

    def _check_inference_device(self) -> None:
        """The outside runtimes (RUNTIMES) run on the CPU: refused on another device before the first batch."""
        if self.networks.inference in RUNTIMES and self.device.type != "cpu":
            raise ValueError(
                f"inference={self.networks.inference!r} runs on the CPU and this module is on "
                f"{self.device}: use inference='fast' on a GPU"
            )

    def _check_precision_device(self) -> None:
        """precision="bf16" or inference="openvino-bf16" on a CPU without bf16 instructions: refused before the
        first batch."""
        if self.networks.precision == "bf16":
            check_bf16_device(self.device, cpu_info())
        if self.networks.inference == "openvino-bf16":
            check_bf16_device(self.device, cpu_info(), "inference='openvino-bf16'")

    def validation_step(self, batch: MattingBatch, batch_idx: int = 0) -> dict[str, Any]:
        """Matte a batch with ground truth (`pha`), update the metrics; returns the outputs for writers.

        Raises:
            ValueError: The batch has no ground-truth `pha`.
        """
        if batch.pha is None:
            raise ValueError("validation batches need ground-truth alpha: MattingBatch.pha is None")
        out = self._matte(batch, tuple(dict.fromkeys((*self.predict_outputs, "pha"))))
        self.val_metrics.update(out["pha"].float(), self._as_float(batch.pha).float())
        self.log_dict(self.val_metrics, on_epoch=True, batch_size=len(batch))
        return out

    def set_bgmv2_stage(self, stage: Literal["base", "refine"] | None) -> None:
        """Train a BGMv2 network's base alone ("base") or the whole MattingRefine ("refine") from the next
        step on; None: what the network is (see `training.stage`).

        Raises:
            ValueError: A stage other than these, "refine" for a MattingBase, or a stage for another family.
        """
        family = self.adapter.family if isinstance(self.adapter, BGMv2Adapter) else None
        self.bgmv2_stage = _check_bgmv2_stage(stage, family, self.variant)

    def training_step(self, batch: MattingBatch | dict[str, MattingBatch], batch_idx: int = 0) -> Tensor:
        """The family's reference losses on a batch of frames [B,C,H,W] or clips [B,T,C,H,W] (uint8 or float)
        with ground truth `pha` and `fgr`, or on {"low": batch, "high": batch}: RVM's two passes, the second at
        `training.high_res_downsample_ratio`, their losses summed (logged as "train/<term>" and
        "train/high/<term>")."""
        if isinstance(batch, dict):
            low, high = (
                self._losses(batch["low"], None),
                self._losses(batch["high"], self.training_settings.high_res_downsample_ratio),
            )
            terms = {name: value for name, value in low.items() if name != "loss"}
            terms |= {f"high/{name}": value for name, value in high.items()}
            terms["loss"] = low["loss"] + high["loss"]
            batch = batch["low"]
        else:
            terms = self._losses(batch, None)
        self.log_dict({f"train/{name}": value for name, value in terms.items()}, batch_size=len(batch))
        return terms["loss"]

    def _losses(self, batch: MattingBatch, downsample_ratio: float | None) -> dict[str, Tensor]:
        src, bgr, pha, fgr = (
            self._as_float(frames) for frames in (batch.src, batch.bgr, batch.pha, batch.fgr)
        )
        return self.adapter.training_losses(
            self.networks.for_training(self.net),
            src,
            bgr,
            pha,
            fgr,
            base_only=self.bgmv2_stage == "base",
            downsample_ratio=downsample_ratio,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over parameter groups named "backbone", "refiner" and "rest" (`TrainingStages` changes their
        rates by name) at `training`'s `backbone_learning_rate`, `refiner_learning_rate` and `learning_rate`; a
        network of unknown family is all "rest"."""
        settings = self.training_settings
        rates = {
            "backbone": settings.backbone_learning_rate,
            "refiner": settings.learning_rate
            if settings.refiner_learning_rate is None
            else settings.refiner_learning_rate,
            "rest": settings.learning_rate,
        }
        groups = parameter_groups(self.net)
        return torch.optim.Adam(
            [{"params": params, "lr": rates[name], "name": name} for name, params in groups.items() if params]
        )

    def _matte(self, batch: MattingBatch, names: Sequence[str]) -> dict[str, Any]:
        """{name: [B,C,H,W]} for `names`, plus "video" and "index", carrying a recurrent state."""
        src, bgr = self._as_float(batch.src), self._as_float(batch.bgr)
        if bgr is None and self.adapter.needs_background:
            raise ValueError(
                f"{self.variant} needs a background plate: give the data a background image or video "
                "(VideoMattingDataModule(backgrounds=...)), or use a model that needs none (rvm-*)"
            )
        video = _single_video(batch.video)
        index = batch.index.cpu()
        warmup = _warmup_count(batch.warmup)
        state = self._state_before(video, int(index[0]), warmup > 0) if self.adapter.recurrent else None
        raw, state = self._run(src, bgr, state, network_outputs_for(names))
        if self.adapter.recurrent:
            self._state_key, self._state = (video, int(index[-1]) + 1), state
        out = named_outputs(raw, names, self._as_float(batch.tgt), self.target_color)
        return {
            **{name: value[warmup:] for name, value in out.items()},
            "video": video,
            "index": index[warmup:],
        }

    def _run(
        self, src: Tensor, bgr: Tensor | None, state: Any, wanted: set[str]
    ) -> tuple[dict[str, Tensor], Any]:
        """The adapter on the network of the mode: the training network, or in eval what `inference` says."""
        if self.training or not self.networks.rewrite:
            return self.adapter(self.networks.for_training(self.net), src, bgr, state, wanted)
        with torch.inference_mode():
            return self.adapter(self.networks.for_inference(self.net), src, bgr, state, wanted)

    def _as_float(self, frames: Tensor | None) -> Tensor | None:
        """uint8 (0-255) or uint16 (0-65535) frames, as decoded, as floats in [0, 1] in the module's dtype, on
        their device (uint16 through float32: float16 cannot hold 65535)."""
        if frames is None:
            return frames
        if frames.dtype == torch.uint8:
            return frames.to(self.dtype).div_(FULL_SCALE[torch.uint8])
        if frames.dtype == torch.uint16:
            return frames.to(torch.float32).div_(FULL_SCALE[torch.uint16]).to(self.dtype)
        return frames

    def _state_before(self, video: str, first_index: int, warmup: bool) -> Any:
        """The carried state when this batch continues the last one; None (a fresh start) otherwise."""
        if first_index != 0 and self._state_key != (video, first_index) and not warmup:
            warnings.warn(
                f"MattingModule: {video} continues at frame {first_index} without the state of the frames "
                "before it; the recurrent state restarts here",
                stacklevel=2,
            )
        return self._state if self._state_key == (video, first_index) else None


def _warmup_count(warmup: Tensor | None) -> int:
    """How many leading frames of a batch are warm-up (see `collate_frames`); they must come first."""
    if warmup is None:
        return 0
    count = int(warmup.sum())
    if not bool(warmup[:count].all()):
        raise ValueError(
            f"warm-up frames must precede the frames to write in a batch, got warmup={warmup.tolist()}"
        )
    return count


def _single_video(names: list[str]) -> str:
    """The one video a batch belongs to (`MattingBatch.video`)."""
    unique = set(names)
    if len(unique) != 1:
        raise ValueError(
            f"a batch must hold frames of one video (use VideoBatchSampler), got frames of {sorted(unique)}"
        )
    return names[0]


def _check_bgmv2_stage(stage: object, family: str | None, variant: str) -> str | None:
    """The BGMv2 stage to train: `stage`, or for None what the network is (None outside BGMv2)."""
    if stage is None:
        return family if family in ("base", "refine") else None
    check_choice("model.training.stage", stage, ("base", "refine"))
    if family not in ("base", "refine"):
        raise ValueError(
            f"model.training.stage applies to BackgroundMattingV2 networks, not {variant}; leave it None"
        )
    if stage == "refine" and family == "base":
        raise ValueError(
            f"model.training.stage='refine' needs a MattingRefine network (mattingrefine-*), got {variant}; a MattingBase "
            "checkpoint loads into one: MattingModule('mattingrefine-<backbone>', checkpoint=<base weights>)"
        )
    return stage


def _check_color(color: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(color) if isinstance(color, Sequence) and not isinstance(color, str) else ()
    if len(values) != 3 or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values):
        raise ValueError(f"target_color must be 3 floats (R, G, B) in [0, 1], got {color!r}")
    return tuple(float(v) for v in values)
