"""The image step's network run inside the step's own process (CPU repositories): OpenVINO (the default) or ONNX
Runtime on the version of the network model that Triton serves (the newest, or the one the request's NET_VERSION
pins: :class:`NetworkVersions`), read from the same model repository. :func:`open_network` is
the one place either is opened.

Why not a BLS call to ``<id>_net``: every call crosses two process boundaries (step -> Triton -> network -> Triton ->
step), and on a CPU server those hops compete with the network for the same cores; in the step, two instances of
one thread each, served faster (docs/decisions.md#in-step-network).
The network model stays in the repository for raw-frame clients and video windows; a GPU repository calls its
TensorRT plan by BLS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from stylize.contract.step import IN_PROCESS_RUNTIMES
from stylize.engine.model_runner import DEFAULT_MODEL_FILENAME


def newest_model_file(repository: Path, model: str, filename: str = DEFAULT_MODEL_FILENAME) -> tuple[Path, int] | None:
    """``<repository>/<model>/<v>/<filename>`` for the highest numbered version ``v`` that has the file, or None.

    Triton serves the same version by default (the version policy keeps the newest ones; a call without a version
    gets the highest loaded)."""
    folder = repository / model
    if not folder.is_dir():
        return None
    versions = sorted(
        (int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / filename).is_file()), reverse=True
    )
    return (folder / str(versions[0]) / filename, versions[0]) if versions else None


def model_versions(repository: Path, model: str, filename: str | None = DEFAULT_MODEL_FILENAME) -> list[int]:
    """The version folders of ``<repository>/<model>`` (holding ``filename`` unless it is None), newest first."""
    folder = repository / model
    if not folder.is_dir():
        return []
    return sorted(
        (
            int(p.name)
            for p in folder.iterdir()
            if p.name.isdigit() and p.is_dir() and (filename is None or (p / filename).is_file())
        ),
        reverse=True,
    )


def newest_served(repository: Path, model: str, ready: Callable[[int], bool]) -> int:
    """The newest version of ``model`` on disk that Triton serves (``ready``), or 0 when it serves none."""
    return next((v for v in model_versions(repository, model, None) if ready(v)), 0)


def served_versions_token(repository: Path, ready: Mapping[str, Callable[[int], bool]]) -> str:
    """The request check's SERVED_VERSIONS: ``"<model>:<newest served version>,..."`` for each model of ``ready``
    (model -> whether Triton serves its version v) that has a folder in ``repository`` (0: none served). It is part of the response-cache key of every image step,
    which runs the version it names when the request pins none (:meth:`NetworkVersions.resolve`), so a cached
    unpinned answer is always that of the version the key names. A repository not on this disk (object storage)
    gives an empty token: the step then resolves the newest version itself."""
    return ",".join(f"{m}:{newest_served(repository, m, r)}" for m, r in ready.items() if (repository / m).is_dir())


def token_version(token: str, model: str) -> int | None:
    """The version the SERVED_VERSIONS ``token`` names for ``model`` (None: the token does not name it)."""
    for item in token.split(","):
        name, _, version = item.rpartition(":")
        if name == model and version.isdigit():
            return int(version)
    return None


def triton_readiness(pb_utils: Any, repository: Path, model: str) -> Callable[[int], bool]:
    """Whether Triton serves ``model`` version v, asked from a python model (``pb_utils.is_model_ready``). A python
    backend without the model-loading API cannot be asked: then only the newest version on disk counts as served
    (the step's behaviour before versions could be pinned)."""
    if hasattr(pb_utils, "is_model_ready"):
        return lambda v: bool(pb_utils.is_model_ready(model_name=model, model_version=str(v)))
    pb_utils.Logger.log_warn(
        f"this python backend cannot tell which versions of {model} are served: the newest version on disk is "
        "taken as the one served, and NET_VERSION is refused for any other"
    )
    return lambda v: v == next(iter(model_versions(repository, model, None)), None)


class VersionNotServed(Exception):
    """The version asked for is not one Triton serves (``invalid``: the client's fault, INVALID_ARGUMENT), or the
    network model serves no version at all right now (not ``invalid``: UNAVAILABLE, worth a retry)."""

    def __init__(self, message: str, *, invalid: bool):
        super().__init__(message)
        self.invalid = invalid


class NetworkVersions:
    """The image step's networks, one per version of the network model that Triton serves, opened on demand.

    An ensemble has one config for all its versions and cannot pass a version to its steps, so the version a client
    pins arrives as the NET_VERSION input, and the step runs that version of ``<model>`` itself. Which versions
    exist is Triton's decision (the network model's version_policy, a version that failed to load, a repository
    changed while serving): ``ready(v)`` asks Triton (``pb_utils.is_model_ready`` in the step) for each version
    folder on disk at every request, so the step follows what Triton serves and never runs a version Triton does
    not: without NET_VERSION the newest served version, a version that is not served is refused naming the served
    ones, and a network whose version stopped being served is let go (memory stays bounded by the policy).

    ``open(path)``: the in-process network of a version's file (None: the step calls the network model by BLS and
    only the version is resolved; the folder may then be absent, as for a repository in object storage, and a
    pinned version is checked with ``ready`` alone).
    """

    def __init__(
        self,
        repository: Path,
        model: str,
        *,
        ready: Callable[[int], bool],
        open: Callable[[Path], Any] | None = None,
        filename: str = DEFAULT_MODEL_FILENAME,
    ):
        self.repository, self.model, self.filename = Path(repository), model, filename
        self.ready, self.open = ready, open
        self.networks: dict[int, Any] = {}

    def path(self, version: int) -> Path:
        return self.repository / self.model / str(version) / self.filename

    def served(self) -> list[int]:
        """Versions Triton serves now, newest first (of those on disk)."""
        on_disk = model_versions(self.repository, self.model, self.filename if self.open else None)
        return [v for v in on_disk if self.ready(v)]

    def preload(self) -> int | None:
        """Open the newest version on disk before the first request (initialize: the network model may not be
        loaded yet, so this is a guess, checked at the first request); returns it, or None without a file."""
        on_disk = model_versions(self.repository, self.model, self.filename)
        if self.open is None or not on_disk:
            return None
        self.networks[on_disk[0]] = self.open(self.path(on_disk[0]))
        return on_disk[0]

    def resolve(self, requested: int | None, newest: int | None = None) -> tuple[int, Any]:
        """(version, its network) for a request: ``requested`` (NET_VERSION), else ``newest`` (the version the
        request check found newest: SERVED_VERSIONS, part of the cache key), else the newest served version. The
        network is None when calling by BLS; the version is then -1 (Triton's newest) when none was asked for and
        the repository is not on this disk."""
        if self.open is None and not (self.repository / self.model).is_dir():
            if requested is not None and not self.ready(requested):
                raise VersionNotServed(f"version {requested} of {self.model} is not served", invalid=True)
            return (-1 if requested is None else requested), None
        served = self.served()
        for v in [v for v in self.networks if v not in served]:
            del self.networks[v]  # Triton no longer serves it: neither does the step
        if requested is None and newest is not None:
            # the answer is cached under the version the check named: run that one, or none (retried, uncached)
            if newest == 0:
                raise VersionNotServed(f"no version of {self.model} is served right now", invalid=False)
            if newest not in served:
                raise VersionNotServed(
                    f"version {newest} of {self.model}, the newest when the request was checked, is no longer "
                    f"served (served now: {', '.join(map(str, sorted(served))) or 'none'}): retry",
                    invalid=False,
                )
            version = newest
        elif requested is None:
            if not served:
                raise VersionNotServed(f"no version of {self.model} is served right now", invalid=False)
            version = served[0]
        elif requested in served:
            version = requested
        else:
            listed = ", ".join(map(str, sorted(served))) or "none"
            raise VersionNotServed(
                f"version {requested} of {self.model} is not served (served versions: {listed})", invalid=True
            )
        if self.open is None:
            return version, None
        if version not in self.networks:
            self.networks[version] = self.open(self.path(version))
        return version, self.networks[version]


class InProcessNetwork:
    """One ONNX Runtime session: uint8 NxHxWx3 in, the network's uint8 output out (the raw frame contract)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, *, input_name: str, output_name: str, threads: int):
        from stylize.engine.ort_runner import ort_session

        self.path = Path(path)
        self.threads = max(1, threads)
        self.session = ort_session(path, threads=self.threads, inter_threads=1, sequential=True)
        self.input_name, self.output_name = input_name, output_name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch)})[0]

    def describe(self) -> str:
        return f"ONNX Runtime fp32, {self.threads} intra-op thread(s)"


class OpenVinoNetwork:
    """One compiled OpenVINO model (one stream, latency hint, unpinned: ov_runner.PINNING): the same contract as
    :class:`InProcessNetwork`."""

    runtime = "openvino"

    def __init__(
        self,
        path: Path,
        *,
        input_name: str,
        output_name: str,
        threads: int,
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ):
        from stylize.engine.ov_runner import CompileSettings, Network

        self.path = Path(path)
        self.threads = max(1, threads)
        self.input_name, self.output_name = input_name, output_name
        self.network = Network(
            self.path,
            CompileSettings(precision=precision, threads=self.threads, streams=1, hint="LATENCY", cache_dir=cache_dir),
            output_names=[output_name],
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.network.run({self.input_name: batch})[0]

    def describe(self) -> str:
        return self.network.built.describe()


def open_network(
    path: Path,
    *,
    runtime: str,
    input_name: str,
    output_name: str,
    threads: int,
    precision: str = "fp32",
    cache_dir: Path | None = None,
):
    """The step's network on ``runtime`` (one of :data:`IN_PROCESS_RUNTIMES`)."""
    if runtime == "openvino":
        return OpenVinoNetwork(
            path,
            input_name=input_name,
            output_name=output_name,
            threads=threads,
            precision=precision,
            cache_dir=cache_dir,
        )
    if runtime == "onnxruntime":
        if precision != "fp32":
            raise ValueError(f"ONNX Runtime runs these networks in fp32 on CPU, not {precision}")
        return InProcessNetwork(path, input_name=input_name, output_name=output_name, threads=threads)
    raise ValueError(f"in-process runtime {runtime!r}; expected one of {', '.join(IN_PROCESS_RUNTIMES)}")


__all__ = [
    "InProcessNetwork",
    "NetworkVersions",
    "OpenVinoNetwork",
    "VersionNotServed",
    "model_versions",
    "newest_model_file",
    "open_network",
]
