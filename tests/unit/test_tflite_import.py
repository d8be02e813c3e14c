"""AnimeGANv2 from TFLite: the importer on the real Hayao file, checked against the TFLite interpreter itself
(ai-edge-litert) layer by layer and end to end on real photos; corrupted files refused; the ``upsample`` modes
(the default unchanged, tf_legacy = TensorFlow's rule, exported to ONNX and run by ONNX Runtime)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from stylize.contract import descriptors
from stylize.engine.photos import centre_square
from stylize_build.archs import AnimeGANv2Generator
from stylize_build.archs.animegan import PARAMETER_COUNT, resize_bilinear_tf_legacy
from stylize_build.weights import WeightImportError
from stylize_build.weights.loaders import UNTRAINED_SEED, load_weights, sha256_file
from stylize_build.weights.tflite import WEIGHT_TENSOR_COUNT, import_tflite, upsample_mode

ANIMEGAN = descriptors.get("animeganv2")
HAYAO_FILE = "animeganv2_hayao_256x256_integer_quant.tflite"
HAYAO_SHA256 = "7d9157db18ad9238a7189c4f56786dbb865f980e219c167def0988fc67ffe5e0"  # ../shared/weights/README.md
WEIGHTS_DIR = Path(
    os.environ.get("STYLIZE_WEIGHTS_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "weights"
)
HAYAO = WEIGHTS_DIR / HAYAO_FILE
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")

needs_weights = pytest.mark.skipif(
    not WEIGHTS_DIR.is_dir(),
    reason=f"no weights folder {WEIGHTS_DIR} (../shared/weights or STYLIZE_WEIGHTS_DIR): the Hayao .tflite is not here",
)


# ---- helpers ---------------------------------------------------------------------------------------------------


def _photo256(name: str) -> np.ndarray:
    return centre_square(name, 256)  # the 256x256 the TFLite file was converted for


def _to_uint8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _torch_out(net: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net(x)[0].permute(1, 2, 0).numpy()


def _untrained(upsample: str = "align_corners") -> AnimeGANv2Generator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return AnimeGANv2Generator(upsample=upsample).eval()


def _with(state: dict, upsample: str) -> AnimeGANv2Generator:
    net = AnimeGANv2Generator(upsample=upsample).eval()
    net.load_state_dict(state)
    return net


def _tf_legacy_reference(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """TensorFlow's legacy bilinear resize (resize_bilinear_op: scale = in/out, in = out_index * scale, upper index
    clamped), written out independently in float64 numpy."""
    _, _, h, w = x.shape

    def axis(n_in: int, n_out: int):
        src = np.arange(n_out) * (n_in / n_out)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    l0, h0, f0 = axis(h, oh)
    l1, h1, f1 = axis(w, ow)
    rows = x[:, :, l0, :] * (1 - f0)[:, None] + x[:, :, h0, :] * f0[:, None]
    return rows[:, :, :, l1] * (1 - f1) + rows[:, :, :, h1] * f1


# ---- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported():
    return import_tflite(HAYAO)


@pytest.fixture(scope="module")
def interpreter_outputs():
    """The .tflite run by the TFLite interpreter (default kernels) on the three photos, inputs in [-1, 1] NHWC."""
    import ai_edge_litert.interpreter as litert  # the test extra: a broken install fails, it is not skipped

    it = litert.Interpreter(model_path=str(HAYAO), num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = {}
    for name in PHOTOS:
        img = _photo256(name)
        it.set_tensor(inp["index"], (img.astype(np.float32) / 127.5 - 1.0)[None])
        it.invoke()
        results[name] = (img, it.get_tensor(out["index"])[0].copy())
    return results


@pytest.fixture(scope="module")
def interpreter_tensors():
    """Every intermediate tensor of one run (reference kernels, no delegate, so each op's output is kept), with the
    interpreter's own op list: the per-layer checks use nothing of the importer's graph reading."""
    import ai_edge_litert.interpreter as litert  # the test extra: a broken install fails, it is not skipped

    it = litert.Interpreter(
        model_path=str(HAYAO),
        num_threads=2,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    img = _photo256("astronaut.png")
    it.set_tensor(it.get_input_details()[0]["index"], (img.astype(np.float32) / 127.5 - 1.0)[None])
    it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}
    names = {d["name"]: d["index"] for d in details.values()}
    ops = it._get_ops_details()

    def value(t: int) -> tuple[torch.Tensor, float]:
        """(dequantized NCHW float tensor, its quantization step)"""
        q = details[t]["quantization_parameters"]
        scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
        a = (it.get_tensor(t).astype(np.float64) - zero) * scale
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float(), scale

    def constant(t: int) -> np.ndarray:
        """A constant int8 tensor dequantized with the interpreter's parameters (per tensor or per channel)."""
        q = details[t]["quantization_parameters"]
        a = it.get_tensor(t).astype(np.float64)
        shape = [1] * a.ndim
        if len(q["scales"]) > 1:
            shape[q["quantized_dimension"]] = len(q["scales"])
        return (a - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)

    return ops, names, value, constant


# ---- the importer on the real file -------------------------------------------------------------------------------


@pytest.mark.unit
@needs_weights
def test_the_hayao_file_maps_onto_every_tensor_of_the_port(imported):
    assert sha256_file(HAYAO) == HAYAO_SHA256
    assert imported.weight_tensors == WEIGHT_TENSOR_COUNT == 77
    assert imported.parameters == PARAMETER_COUNT == 2_143_552
    own = AnimeGANv2Generator().state_dict()
    assert {k: tuple(v.shape) for k, v in imported.state_dict.items()} == {k: tuple(v.shape) for k, v in own.items()}
    assert all(torch.isfinite(v).all() and v.abs().sum() > 0 for v in imported.state_dict.values())
    # the file was converted from a generator trained with TF's legacy resize: that selects the upsample mode
    assert imported.resize == (False, False) and dict(imported.arch_params) == {"upsample": "tf_legacy"}
    assert imported.network.upsample == "tf_legacy"
    assert imported.input_shape == (1, 256, 256, 3)
    # TF contrib layer_norm's epsilon (the port keeps GroupNorm's 1e-5: docs/weights.md)
    assert imported.layer_norm_epsilon == pytest.approx(1e-12, rel=1e-3)
    # scopes: block letter per port block, C/rN for the N-th inverted residual block of block_c
    scopes = {key: name.split("G_MODEL/")[1].split("/")[:2] for key, name in imported.layers}
    assert scopes["block_a.0.1"][0] == "A" and scopes["out_layer.0"][0] == "out_layer"
    for n in range(1, 5):
        assert scopes[f"block_c.{n}.layers.1.1"] == ["C", f"r{n}"]  # the depthwise conv of rN
    assert [scopes[k][0] for k in ("block_c.5.1", "block_d.0.1", "block_e.2.1")] == ["C", "D", "E"]


@pytest.mark.unit
@needs_weights
def test_each_imported_convolution_reproduces_the_interpreters_layer(imported, interpreter_tensors):
    """Fed the interpreter's own (dequantized) input of each convolution, the imported weights give its output
    within the int8 rounding of that output; the untrained weights are nowhere near. Proves the mapping,
    dequantization and layouts layer by layer, apart from the int8 activations' error that accumulates end to end.
    """
    ops, names, value, constant = interpreter_tensors
    index_name = {t: name.split(";")[0] for name, t in names.items()}  # fused ops list all folded names
    convs = {index_name[int(op["outputs"][0])]: op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    port, untrained = AnimeGANv2Generator(), _untrained().state_dict()
    assert len(imported.layers) == len(convs) == 25
    for key, tf_name in imported.layers:
        op = convs[tf_name]
        kernel = constant(int(op["inputs"][1]))  # OHWI, or 1HWC for depthwise
        kernel = kernel.transpose(3, 0, 1, 2) if op["op_name"] == "DEPTHWISE_CONV_2D" else kernel.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(imported.state_dict[f"{key}.weight"].numpy(), kernel, rtol=1e-6, atol=1e-9)
        x, _ = value(int(op["inputs"][0]))  # already mirror-padded by the file
        y, step = value(int(op["outputs"][0]))
        stride = port.get_submodule(key).stride

        def run(state):
            w, b = state[f"{key}.weight"], state.get(f"{key}.bias")
            return F.conv2d(x, w, b, stride=stride, groups=w.shape[0] if op["op_name"] == "DEPTHWISE_CONV_2D" else 1)

        err = float((run(imported.state_dict) - y).abs().mean())
        # measured: 0.25-0.26 steps (round-to-nearest alone gives 0.25); untrained weights 12-67 steps
        assert err < 0.5 * step, (key, err / step)
        assert float((run(untrained) - y).abs().mean()) > 10 * err, key


@pytest.mark.unit
@needs_weights
def test_each_layer_norm_holds_the_gamma_and_beta_the_interpreter_applies_after_that_convolution(
    imported, interpreter_tensors
):
    """Found by walking the interpreter's own op list from each convolution's output along TF's batchnorm form
    (y * (gamma * rsqrt(var + eps)) + (beta - mean * ...)): the GroupNorm after the port's matching Conv2d holds
    exactly those gamma and beta. (Their effect is partly below the int8 resolution of a single layer, so they are
    compared as tensors, not through the layer's output.)"""
    ops, names, _, constant = interpreter_tensors
    producer = {int(op["outputs"][0]): op for op in ops}
    consumers: dict[int, list] = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(op)
    index_name = {t: name.split(";")[0] for name, t in names.items()}
    convs = {index_name[int(op["outputs"][0])]: op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")}

    def only(ops_, kind):
        hits = [o for o in ops_ if o["op_name"] == kind]
        assert len(hits) == 1, kind
        return hits[0]

    def other(op, t):
        return next(int(i) for i in op["inputs"] if int(i) != t)

    checked = 0
    for key, tf_name in imported.layers:
        parent, idx = key.rsplit(".", 1)
        norm = f"{parent}.{int(idx) + 1}"
        if f"{norm}.weight" not in imported.state_dict:  # out_layer: tanh, no norm
            continue
        y = int(convs[tf_name]["outputs"][0])
        mul_y = only(consumers[y], "MUL")
        scale_op = producer[other(mul_y, y)]  # gamma * rsqrt(var + eps)
        gamma_t = next(int(t) for t in scale_op["inputs"] if int(t) not in producer)
        add = only(consumers[int(mul_y["outputs"][0])], "ADD")
        sub = producer[other(add, int(mul_y["outputs"][0]))]  # beta - mean * scale
        assert sub["op_name"] == "SUB"
        beta_t = int(sub["inputs"][0])
        np.testing.assert_allclose(imported.state_dict[f"{norm}.weight"].numpy(), constant(gamma_t), rtol=1e-6)
        np.testing.assert_allclose(imported.state_dict[f"{norm}.bias"].numpy(), constant(beta_t), rtol=1e-6, atol=1e-12)
        checked += 1
    assert checked == 24


@pytest.mark.unit
@needs_weights
def test_the_files_resizes_are_tensorflows_legacy_rule(interpreter_tensors):
    """The interpreter's two RESIZE_BILINEAR ops, fed their own input: tf_legacy reproduces them to the int8
    rounding (half a step), the port's align_corners does not."""
    ops, _, value, _ = interpreter_tensors
    resizes = [op for op in ops if op["op_name"] == "RESIZE_BILINEAR"]
    assert len(resizes) == 2
    for op in resizes:
        x, _ = value(int(op["inputs"][0]))
        y, step = value(int(op["outputs"][0]))
        size = y.shape[-2:]
        legacy = float((resize_bilinear_tf_legacy(x, size) - y).abs().max())
        corners = float((F.interpolate(x, size=size, mode="bilinear", align_corners=True) - y).abs().max())
        assert legacy <= 0.5 * step * (1 + 1e-4), legacy / step  # measured: exactly half a step
        assert corners > 20 * step, corners / step  # measured: 116-138 steps


@pytest.mark.unit
@needs_weights
def test_the_imported_model_matches_the_interpreter_far_better_than_untrained(imported, interpreter_outputs):
    """End to end on three real photos (uint8 PSNR against the interpreter's output). The int8 file is itself an
    approximation of the float network (its layer norms use int8 variances), so the imported float model is not
    expected to match it exactly; the margins are what separates a correct import from a wrong one."""
    legacy, corners, untrained = (
        _with(imported.state_dict, "tf_legacy"),
        _with(imported.state_dict, "align_corners"),
        _untrained(),
    )
    for name, (img, want) in interpreter_outputs.items():
        ref = _to_uint8(want)
        got = {
            k: _to_uint8(_torch_out(n, img))
            for k, n in (("tf_legacy", legacy), ("align_corners", corners), ("untrained", untrained))
        }
        psnr = {k: _psnr(v, ref) for k, v in got.items()}
        mad = {k: float(np.mean(np.abs(v.astype(int) - ref))) for k, v in got.items()}
        # measured (docs/weights.md): tf_legacy 23.4-31.1 dB, align_corners 18.9-23.8 dB, untrained 8.9-11.2 dB
        assert psnr["tf_legacy"] > psnr["untrained"] + 10, (name, psnr)
        assert psnr["tf_legacy"] > psnr["align_corners"] + 2, (name, psnr)
        assert mad["tf_legacy"] < mad["untrained"] / 3 and mad["tf_legacy"] < mad["align_corners"], (name, mad)


@pytest.mark.unit
@needs_weights
def test_load_weights_builds_tf_legacy_and_records_it(tmp_path):
    net, info = load_weights(ANIMEGAN, HAYAO)
    assert info.kind == "tflite" and net.upsample == "tf_legacy"
    assert info.files[0].path == str(HAYAO) and info.files[0].sha256 == HAYAO_SHA256
    assert info.arch_params == {"upsample": "tf_legacy"} == info.effective_arch_params(ANIMEGAN)
    assert info.to_dict()["arch_params"] == {"upsample": "tf_legacy"}
    # a PyTorch checkpoint of the same tensors keeps the descriptor's (default) mode and records no override
    path = tmp_path / "animegan.pt"
    torch.save(net.state_dict(), path)
    net2, info2 = load_weights(ANIMEGAN, path)
    assert net2.upsample == "align_corners" and info2.arch_params is None
    assert info2.effective_arch_params(ANIMEGAN) == dict(ANIMEGAN.network.params)


@pytest.mark.unit
@needs_weights
def test_the_fingerprint_follows_the_arch_params_actually_used():
    from stylize_build.repository import fingerprint

    sha = "0" * 64
    assert fingerprint(ANIMEGAN, sha) == fingerprint(ANIMEGAN, sha, dict(ANIMEGAN.network.params))
    _, info = load_weights(ANIMEGAN, HAYAO)
    assert fingerprint(ANIMEGAN, sha, info.effective_arch_params(ANIMEGAN)) != fingerprint(ANIMEGAN, sha)


# ---- refusals ----------------------------------------------------------------------------------------------------


def _patched(tmp_path: Path, name: str, patch) -> Path:
    """A copy of the Hayao file with ``patch(data: bytearray, model)`` applied in place (same length)."""
    import tflite

    data = bytearray(HAYAO.read_bytes())
    patch(data, tflite.Model.GetRootAs(data, 0))
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def _tensor(model, name: str):
    sg = model.Subgraphs(0)
    return next(sg.Tensors(i) for i in range(sg.TensorsLength()) if sg.Tensors(i).Name().decode() == name)


def _rename(data: bytearray, old: str, new: str) -> None:
    """Rewrite one tensor name in place (a flatbuffer string: uint32 length, bytes, NUL)."""
    assert len(old) == len(new)
    pos = data.find(old.encode() + b"\0")
    assert pos > 4 and struct.unpack_from("<I", data, pos - 4)[0] == len(old)
    data[pos : pos + len(old)] = new.encode()


@pytest.mark.unit
@needs_weights
def test_truncated_or_foreign_files_are_refused(tmp_path):
    half = tmp_path / "half.tflite"
    half.write_bytes(HAYAO.read_bytes()[: HAYAO.stat().st_size // 2])
    with pytest.raises(WeightImportError, match="corrupt TFLite|bad tensor references|bytes for shape"):
        import_tflite(half)
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(b"\0" * 4 + b"ONNX" + b"\0" * 64)
    with pytest.raises(WeightImportError, match="not a TFLite flatbuffer"):
        import_tflite(foreign)
    with pytest.raises(WeightImportError, match="AnimeGANv2 only"):
        import_tflite(HAYAO, arch="RRDBNet")
    with pytest.raises(WeightImportError, match="AnimeGANv2 only"):  # through the loader, for another model
        load_weights(descriptors.get("esrgan_x4"), HAYAO)


@pytest.mark.unit
@needs_weights
def test_a_wrong_shape_or_scope_is_refused(tmp_path):
    def shrink_kernel(data, model):  # A/Conv's kernel claims 2 input channels instead of 3
        _tensor(model, "generator/G_MODEL/A/Conv/Conv2D").ShapeAsNumpy()[3] = 2

    with pytest.raises(WeightImportError, match=r"bytes for shape \(32, 7, 7, 2\)"):
        import_tflite(_patched(tmp_path, "shape.tflite", shrink_kernel))

    def move_scope(data, model):  # C/r2's expand conv appears under another residual block
        _rename(data, "generator/G_MODEL/C/r2/Conv/Conv2D1", "generator/G_MODEL/C/r7/Conv/Conv2D1")

    with pytest.raises(WeightImportError, match="TF scope C/r7, the port's block is C/r2"):
        import_tflite(_patched(tmp_path, "scope.tflite", move_scope))


@pytest.mark.unit
@needs_weights
def test_inconsistent_quantization_is_refused(tmp_path):
    def bias_scale(data, model):  # C/r1's depthwise bias scale no longer input_scale * weight_scale
        sg = model.Subgraphs(0)
        t = next(
            sg.Tensors(i)
            for i in range(sg.TensorsLength())
            if sg.Tensors(i).Name().decode().endswith("generator/G_MODEL/C/r1/r1/bias")
        )
        t.Quantization().ScaleAsNumpy()[5] *= 2

    with pytest.raises(WeightImportError, match="stored scales differ from input_scale"):
        import_tflite(_patched(tmp_path, "bias.tflite", bias_scale))

    def nonzero_bias(data, model):  # the zero bias TFLite gives A/Conv (bias-free in the port) becomes non-zero
        sg = model.Subgraphs(0)
        out = _tensor(model, "generator/G_MODEL/A/Conv/Conv2D1")
        conv = next(
            sg.Operators(i)
            for i in range(sg.OperatorsLength())
            if sg.Tensors(int(sg.Operators(i).OutputsAsNumpy()[0])).Name() == out.Name()
        )
        t = sg.Tensors(int(conv.InputsAsNumpy()[2]))
        model.Buffers(t.Buffer()).DataAsNumpy()[0] = 7

    with pytest.raises(WeightImportError, match="non-zero bias"):
        import_tflite(_patched(tmp_path, "zero_bias.tflite", nonzero_bias))


@pytest.mark.unit
def test_half_pixel_resizes_have_no_port_mode():
    assert upsample_mode(False, False) == "tf_legacy" and upsample_mode(True, False) == "align_corners"
    with pytest.raises(WeightImportError, match="no such upsample mode"):
        upsample_mode(False, True)


# ---- the upsample modes ------------------------------------------------------------------------------------------


def _forward_as_before(net: AnimeGANv2Generator, x: torch.Tensor) -> torch.Tensor:
    """AnimeGANv2Generator.forward as it was before the upsample parameter (align_corners=True, saved sizes)."""
    out = net.block_a(x)
    half = out.shape[-2:]
    out = net.block_c(net.block_b(out))
    out = net.block_d(F.interpolate(out, size=half, mode="bilinear", align_corners=True))
    out = net.block_e(F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=True))
    return net.out_layer(out)


@pytest.mark.unit
def test_the_default_mode_is_unchanged():
    default, legacy = _untrained(), _untrained("tf_legacy")
    assert default.upsample == "align_corners"
    # the mode has no tensors and does not touch the initialisation
    sd, sl = default.state_dict(), legacy.state_dict()
    assert sd.keys() == sl.keys() and all(torch.equal(sd[k], sl[k]) for k in sd)
    assert sum(p.numel() for p in default.parameters()) == PARAMETER_COUNT
    x = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(3)) * 2 - 1  # odd sides too
    with torch.no_grad():
        assert torch.equal(default(x), _forward_as_before(default, x))
        assert not torch.allclose(legacy(x), default(x), atol=1e-3)
    with pytest.raises(ValueError, match="upsample must be one of"):
        AnimeGANv2Generator(upsample="bicubic")
    with pytest.raises(TypeError):
        AnimeGANv2Generator("tf_legacy")  # keyword-only


@pytest.mark.unit
@pytest.mark.parametrize("shape", [(4, 5, 8, 10), (64, 64, 128, 128), (7, 9, 13, 17), (32, 25, 64, 50), (6, 6, 4, 3)])
def test_tf_legacy_resize_is_tensorflows_rule(shape):
    h, w, oh, ow = shape
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    got = resize_bilinear_tf_legacy(x, (oh, ow)).numpy()
    assert got.shape == (2, 3, oh, ow)
    np.testing.assert_allclose(got, _tf_legacy_reference(x.numpy().astype(np.float64), oh, ow), atol=1e-6)


@pytest.mark.export
def test_tf_legacy_exports_to_onnx_and_onnx_runtime_matches(tmp_path):
    """Through the build's own export (checker, I/O, ORT-vs-PyTorch parity on a real photo crop), then once more at
    another size (the graph's sizes are dynamic), and TensorRT's parser rules checked statically."""
    import onnxruntime as ort
    from stylize.engine.photos import real_photo_crop
    from stylize_build.export import OPSET, ServingWrapper, export_onnx
    from stylize_build.trt_rules import check_graph

    net = _untrained("tf_legacy")
    path = tmp_path / "model.onnx"
    report = export_onnx(ANIMEGAN, net, path)
    assert report.opset == OPSET == 17 and report.parity_max_abs <= ANIMEGAN.checks.parity_atol
    model = onnx.load(str(path))
    assert check_graph(model) == []
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2 and all(
        onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "coordinate_transformation_mode"))
        == b"align_corners"
        for n in resizes
    )
    assert {
        onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "mode"))
        for n in model.graph.node
        if n.op_type == "Pad"
    } == {b"reflect", b"edge"}

    x = real_photo_crop(100, 132, name="chelsea.png")[None]
    with torch.no_grad():
        want = ServingWrapper(net=net, desc=ANIMEGAN).eval()(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([ANIMEGAN.net_output.name], {ANIMEGAN.net_input.name: x})[0]
    assert got.shape == want.shape == (1, 100, 132, 3)
    assert int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()) <= ANIMEGAN.checks.parity_atol
