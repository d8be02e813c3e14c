"""The SDK's reading of a dead stub's error, and the census's reading of /proc (on real processes of this machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from stylize.contract.errors import InstanceFailed, ServerError, ServerUnavailable, from_status
from stylize.server import healing


def test_a_dead_stub_is_retryable_and_other_internal_errors_are_not():
    err = from_status(
        "StatusCode.INTERNAL",
        "in ensemble 'animevideo_x2', in ensemble 'animevideo_x2_cached', Stub "
        "process 'animevideo_x2_image_0_0' is not healthy.",
        model="animevideo_x2",
    )
    assert isinstance(err, InstanceFailed) and isinstance(err, ServerUnavailable)
    assert err.message.startswith("Stub process 'animevideo_x2_image_0_0' is not healthy")
    from stylize.sdk.transport import RetryPolicy

    assert RetryPolicy().retryable(err)
    other = from_status("StatusCode.INTERNAL", "onnx runtime error 6: out of memory", model="esrgan_x4")
    assert type(other) is ServerError and not RetryPolicy().retryable(other)


def test_a_dead_child_is_a_zombie_until_reaped():
    """The signal the probe reads, on a real child of this process: a killed child stays state Z until waited for.
    (Its name is not the stub's, so it is counted only with ``comm`` matched; dead_stubs() itself must ignore it.)"""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st = healing._stat(child.pid, healing.Path("/proc"))
        assert st is not None and st.ppid == os.getpid() and st.state != "Z"
        child.kill()
        deadline = time.monotonic() + 10
        while (
            (st := healing._stat(child.pid, healing.Path("/proc"))) and st.state != "Z" and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert st is not None and st.state == "Z"
        assert healing.dead_stubs(os.getpid()) == []  # not a stub
        assert healing.live_stubs(os.getpid()) == {}
    finally:
        child.kill()
        child.wait()
    assert healing._stat(child.pid, healing.Path("/proc")) is None  # reaped: gone


def test_the_probe_without_a_server_fails():
    assert healing.check([]) == ["no tritonserver process"]


def test_the_launcher_loads_what_it_can_reload(tmp_path):
    """Explicit model control with every model (healing), or only the models asked for with what they need."""
    import pytest
    from stylize.contract.descriptors import REGISTRY
    from stylize.server.errors import ModelRepositoryError
    from stylize.server.launcher import TritonServer
    from stylize.server.settings import ServerSettings

    everything = TritonServer(ServerSettings(model_repository=tmp_path)).command()
    assert "--model-control-mode=explicit" in everything and "--load-model=*" in everything
    assert not any(
        a.startswith("--model-control-mode")
        for a in TritonServer(ServerSettings(model_repository=tmp_path, heal=False)).command()
    )
    some = TritonServer(ServerSettings(model_repository=tmp_path, models=("animevideo_x2",), heal=False)).command()
    loads = [a.split("=", 1)[1] for a in some if a.startswith("--load-model=")]
    assert loads == list(REGISTRY["animevideo_x2"].triton_models)  # the network too: the step runs it in process
    with pytest.raises(ValueError, match="explicit model control"):
        ServerSettings(models=("animeganv2",), extra_args=("--model-control-mode=poll",))
    (tmp_path / "animeganv2" / "1").mkdir(parents=True)
    (tmp_path / "animeganv2" / "config.pbtxt").write_text('name: "animeganv2"\n')
    with pytest.raises(ModelRepositoryError, match="has no model .*animevideo_x2"):
        TritonServer(ServerSettings(model_repository=tmp_path, models=("animevideo_x2",))).start()
