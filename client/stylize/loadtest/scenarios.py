"""Load-test scenarios: data files (TOML) under ``loadtest/scenarios/``, one file per scenario set.

A set file::

    description = "what this set answers"
    [defaults]                      # any scenario field; each scenario may override
    measurement_ms = 3000
    [capacity]                      # optional: this set's results feed the capacity plan (python -m stylize_k8s.plan)
    slo_latency_ms = 2000
    percentile = 95
    [[scenario]]
    name = "animevideo_x4_png128"   # unique across all sets
    model = "animevideo_x4"         # a descriptor id (client/stylize/contract/descriptors.py)
    variant = "ensemble"            # ensemble | net | int8 | int8_net: which Triton model of that descriptor
    input = { size = 128, format = "PNG", photos = ["astronaut.png", "coffee.png"], crops = 4 }
    concurrency = [1, 2, 4]         # or request_rate = [0.5, 1.0, 2.0] (requests/s); one perf_analyzer run per level
    distribution = "constant"       # request-rate arrivals (or "poisson")
    batch = 1                       # network models: images per request
    slo_p95_ms = 1500               # optional: pass/fail in the report

Triton model names are derived from the descriptor (never typed in a scenario file).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from stylize.contract.descriptors import REGISTRY, VARIANTS, ModelDescriptor

INPUT_FORMATS = ("PNG", "JPEG")


class ScenarioError(ValueError):
    """A scenario file is malformed, or a requested scenario/set does not exist."""


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    size: tuple[int, int]  # h, w of the image (ensembles) or frame (networks)
    format: str = "PNG"  # encoding of the ensembles' input
    photos: tuple[str, ...] = ("astronaut.png",)
    crops: int = 1  # distinct crops per photo (perf_analyzer cycles through them)

    @property
    def label(self) -> str:
        h, w = self.size
        return f"{h}x{w}"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    set: str  # the file it comes from
    model: str  # descriptor id
    variant: str
    input: InputSpec
    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    distribution: str = "constant"  # request-rate arrivals: constant | poisson (poisson needs long windows to settle)
    batch: int = 1
    measurement_ms: int = 3000
    request_count: int | None = None  # count_windows mode: at least this many requests per window (slow models)
    stability_percent: int = 25
    max_trials: int = 6
    unstable_retries: int = 1  # run a level again when perf_analyzer found no stable measurement
    percentile: int = 95
    slo_p95_ms: float | None = None
    timeout_s: float = 600.0  # per perf_analyzer run

    @property
    def descriptor(self) -> ModelDescriptor:
        return REGISTRY[self.model]

    @property
    def triton_model(self) -> str:
        return self.descriptor.variant_model(self.variant)

    @property
    def is_ensemble(self) -> bool:
        """Encoded image in/out (the client-facing path) rather than raw frames into a network model."""
        return self.variant in ("ensemble", "int8") and not self.descriptor.window

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency else "request_rate"

    @property
    def levels(self) -> tuple[float, ...]:
        return self.concurrency or self.request_rate

    @property
    def input_label(self) -> str:
        if self.is_ensemble:
            return f"{self.input.label} {self.input.format}"
        window = self.descriptor.window
        frames = f"{window}x" if window else ""
        return f"{frames}{self.input.label} uint8" + (f" x{self.batch}" if self.batch > 1 else "")


@dataclass(frozen=True)
class CapacitySpec:
    slo_latency_ms: float
    percentile: int = 95


@dataclass(frozen=True)
class ScenarioSet:
    name: str
    path: Path
    description: str
    scenarios: tuple[Scenario, ...]
    capacity: CapacitySpec | None = None


_SCENARIO_FIELDS = {f.name for f in fields(Scenario)} - {"set"}


def _size(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ScenarioError(f"{where}: input.size must be a positive int or [h, w]")
    return int(value[0]), int(value[1])


def _input(raw: Any, where: str) -> InputSpec:
    if not isinstance(raw, Mapping) or "size" not in raw:
        raise ScenarioError(f"{where}: `input` must be a table with at least `size`")
    unknown = set(raw) - {"size", "format", "photos", "crops"}
    if unknown:
        raise ScenarioError(f"{where}: unknown input field(s) {', '.join(sorted(unknown))}")
    fmt = str(raw.get("format", "PNG")).upper()
    if fmt not in INPUT_FORMATS:
        raise ScenarioError(f"{where}: input.format must be one of {', '.join(INPUT_FORMATS)}")
    photos = tuple(raw.get("photos", ("astronaut.png",)))
    crops = int(raw.get("crops", 1))
    if not photos or crops < 1:
        raise ScenarioError(f"{where}: input needs at least one photo and crops >= 1")
    return InputSpec(size=_size(raw["size"], where), format=fmt, photos=photos, crops=crops)


def _scenario(raw: Mapping[str, Any], defaults: Mapping[str, Any], set_name: str, where: str) -> Scenario:
    merged = {**defaults, **raw}
    unknown = set(merged) - _SCENARIO_FIELDS
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("name", "model", "variant", "input"):
        if key not in merged:
            raise ScenarioError(f"{where}: missing `{key}`")
    where = f"{where} ({merged['name']})"
    if merged["model"] not in REGISTRY:
        raise ScenarioError(f"{where}: unknown model {merged['model']!r}; known: {', '.join(REGISTRY)}")
    if merged["variant"] not in VARIANTS:
        raise ScenarioError(f"{where}: variant must be one of {', '.join(VARIANTS)}")
    has_c, has_r = bool(merged.get("concurrency")), bool(merged.get("request_rate"))
    if has_c == has_r:
        raise ScenarioError(f"{where}: give exactly one of `concurrency` or `request_rate` (a non-empty list)")
    kwargs = dict(merged)
    kwargs["input"] = _input(merged["input"], where)
    kwargs["concurrency"] = tuple(int(c) for c in merged.get("concurrency", ()))
    kwargs["request_rate"] = tuple(float(r) for r in merged.get("request_rate", ()))
    if any(c < 1 for c in kwargs["concurrency"]) or any(r <= 0 for r in kwargs["request_rate"]):
        raise ScenarioError(f"{where}: concurrency levels must be >= 1 and request rates > 0")
    s = Scenario(set=set_name, **kwargs)
    d = s.descriptor
    if s.batch < 1 or s.batch > d.serving.max_batch_size:
        raise ScenarioError(f"{where}: batch must be within 1..{d.serving.max_batch_size} for {d.id}")
    if s.is_ensemble and s.batch != 1:
        raise ScenarioError(f"{where}: ensembles take one encoded image per request (batch = 1)")
    if d.window and d.variant_network(s.variant) == d.int8_model:
        raise ScenarioError(f"{where}: {d.id} has no INT8 variant")
    h, w = s.input.size
    if h % d.network.size_multiple or w % d.network.size_multiple or min(h, w) < d.network.min_size:
        if not s.is_ensemble:  # the ensembles pad; network models take what they are given
            raise ScenarioError(
                f"{where}: {d.id} needs sides that are multiples of {d.network.size_multiple} "
                f"and >= {d.network.min_size}"
            )
    if s.distribution not in ("constant", "poisson"):
        raise ScenarioError(f"{where}: distribution must be constant or poisson")
    if s.percentile not in (50, 90, 95, 99):
        raise ScenarioError(f"{where}: percentile must be 50, 90, 95 or 99")
    return s


def load_set(path: Path) -> ScenarioSet:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ScenarioError(f"{path}: {e}") from None
    unknown = set(raw) - {"description", "defaults", "capacity", "scenario"}
    if unknown:
        raise ScenarioError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    defaults = raw.get("defaults", {})
    entries = raw.get("scenario", [])
    if not entries:
        raise ScenarioError(f"{path}: no [[scenario]] entries")
    scenarios = tuple(_scenario(e, defaults, path.stem, f"{path.name}[{i}]") for i, e in enumerate(entries))
    capacity = None
    if "capacity" in raw:
        c = raw["capacity"]
        try:
            capacity = CapacitySpec(float(c["slo_latency_ms"]), int(c.get("percentile", 95)))
        except (KeyError, TypeError, ValueError) as e:
            raise ScenarioError(f"{path}: [capacity] needs slo_latency_ms (and optionally percentile): {e}") from None
        if capacity.percentile not in (50, 95):
            raise ScenarioError(f"{path}: [capacity] percentile must be 50 or 95")
    return ScenarioSet(path.stem, path, str(raw.get("description", "")), scenarios, capacity)


def load_all(directory: Path) -> dict[str, ScenarioSet]:
    """Every set in ``directory``; scenario names must be unique across sets."""
    if not directory.is_dir():
        raise ScenarioError(f"no scenario directory {directory}")
    sets = {p.stem: load_set(p) for p in sorted(directory.glob("*.toml"))}
    if not sets:
        raise ScenarioError(f"{directory}: no *.toml scenario sets")
    seen: dict[str, str] = {}
    for s in sets.values():
        for sc in s.scenarios:
            if sc.name in seen:
                raise ScenarioError(f"scenario {sc.name!r} is defined in both {seen[sc.name]} and {s.name}")
            seen[sc.name] = s.name
    return sets


def select(sets: Mapping[str, ScenarioSet], names: Sequence[str]) -> list[Scenario]:
    """Scenarios by set name or scenario name, in the order given (a set expands to its scenarios), no duplicates."""
    by_name = {sc.name: sc for s in sets.values() for sc in s.scenarios}
    chosen: list[Scenario] = []
    for n in names:
        if n in sets:
            items: Iterable[Scenario] = sets[n].scenarios
        elif n in by_name:
            items = (by_name[n],)
        else:
            raise ScenarioError(f"no scenario or set named {n!r}; sets: {', '.join(sets)}")
        chosen += [sc for sc in items if sc not in chosen]
    return chosen


def with_overrides(scenario: Scenario, **overrides: Any) -> Scenario:
    return replace(scenario, **{k: v for k, v in overrides.items() if v is not None})


__all__ = [
    "VARIANTS",
    "ScenarioError",
    "InputSpec",
    "Scenario",
    "CapacitySpec",
    "ScenarioSet",
    "load_set",
    "load_all",
    "select",
    "with_overrides",
]
