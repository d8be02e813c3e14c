"""The image step's in-process network: which file it loads, and that it computes what ONNX Runtime computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from stylize.descriptors import REGISTRY
from stylize.photos import real_photo_crop
from stylize.server.ort_runner import DEFAULT_MODEL_FILENAME as MODEL_FILE
from stylize.server.steps.network import InProcessNetwork, newest_model_file


def test_newest_version_with_the_file_wins(tmp_path):
    model = tmp_path / "m_net"
    for v in ("1", "3", "10"):
        (model / v).mkdir(parents=True)
        (model / v / MODEL_FILE).write_bytes(b"x")
    (model / "12").mkdir()  # a version folder without the file (being written, or broken): skipped
    (model / "latest").mkdir()  # not a version
    assert newest_model_file(tmp_path, "m_net") == (model / "10" / MODEL_FILE, 10)  # 10 > 3: numbers, not text
    assert newest_model_file(tmp_path, "other") is None
    (tmp_path / "empty").mkdir()
    assert newest_model_file(tmp_path, "empty") is None


def test_in_process_network_matches_onnx_runtime_on_the_repository_file(model_repository):
    desc = REGISTRY["animevideo_x2"]
    path, _ = newest_model_file(model_repository, desc.net_model)
    net = InProcessNetwork(path, input_name=desc.net_input.name, output_name=desc.net_output.name, threads=1)
    assert net.session.get_session_options().intra_op_num_threads == 1
    frame = real_photo_crop(24, 32)[None]
    out = net(np.asfortranarray(frame))  # not C-contiguous: accepted (copied for ONNX Runtime)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        [desc.net_output.name], {desc.net_input.name: frame})[0]
    assert out.dtype == np.uint8 and out.shape == (1, 48, 64, 3)
    np.testing.assert_array_equal(out, reference)
