"""Video outputs play in browsers by default: H.264 (VP9 for alpha) with PyAV, mp4v with one warning without."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from test_loggers import codec_of
from torch.utils.data import DataLoader, TensorDataset

from lightning_matting import VideoWriterCallback
from lightning_matting.callbacks import loggers


class Alpha(L.LightningModule):
    def predict_step(self, batch, i):
        return {"pha": batch[0][:, :1], "fgr": batch[0]}


def predict(tmp_path, **settings) -> VideoWriterCallback:
    frames = torch.linspace(0, 1, 6).view(6, 1, 1, 1).expand(6, 3, 48, 64)
    writer = VideoWriterCallback(tmp_path / "out", fps=25, **settings)
    L.Trainer(logger=False, enable_progress_bar=False, callbacks=[writer]).predict(
        Alpha(), DataLoader(TensorDataset(frames), batch_size=2), return_predictions=False
    )
    return writer


def test_predict_writes_h264_by_default(tmp_path):
    writer = predict(tmp_path, outputs=["pha", "fgr"])
    for output in ("pha", "fgr"):
        assert writer.written["predict_0"][output].suffix == ".mp4"
        assert codec_of(str(writer.written["predict_0"][output])) == ("h264", "yuv420p", 6)


def test_an_alpha_com_is_vp9_by_default(tmp_path):
    writer = predict(tmp_path, outputs=["com"], alpha=True)
    path = writer.written["predict_0"]["com"]
    assert path.suffix == ".webm" and codec_of(str(path))[::2] == ("vp9", 6)


def test_a_chosen_fourcc_is_kept(tmp_path):
    writer = predict(tmp_path, outputs=["pha"], fourcc="mp4v")
    assert codec_of(str(writer.written["predict_0"]["pha"]))[::2] == ("mpeg4", 6)


def test_without_pyav_the_default_is_mp4v_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "browser_codec", lambda alpha=False: None)
    loggers.warn_once.cache_clear()
    message = (
        "VideoWriterCallback: PyAV is not installed, so videos are written as OpenCV's mp4v, which browsers (and "
        "W&B or MLflow) do not play; pip install 'lightning-matting[av]' for H.264, or pass fourcc='mp4v' to "
        "choose mp4v"
    )
    with pytest.warns(UserWarning) as caught:
        writer = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    assert [str(warning.message) for warning in caught] == [message]
    assert (writer.output_format.codec, writer.output_format.fourcc) == (None, "mp4v")
    loggers.warn_once.cache_clear()
