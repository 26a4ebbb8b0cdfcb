"""Device and precision settings resolve for the machine they are told about: the CUDA path is covered on CPUs."""

import pytest

from evoforge.core.config import RunConfig, TournamentConfig
from models.devices import DeviceError, default_score_batch, resolve_device, resolve_precision


def test_auto_picks_a_gpu_when_torch_sees_one_and_the_cpu_otherwise():
    assert resolve_device("auto", cuda_count=0) == "cpu"
    assert resolve_device("auto", cuda_count=2) == "cuda:0"
    assert resolve_device("cuda", cuda_count=1) == "cuda:0"
    assert resolve_device("cuda:1", cuda_count=2) == "cuda:1"
    assert resolve_device("cpu", cuda_count=4) == "cpu"


def test_a_gpu_the_machine_lacks_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"device: 'cuda' asked for, but torch sees no CUDA device.*'auto' or 'cpu'"):
        resolve_device("cuda", cuda_count=0)
    with pytest.raises(DeviceError, match=r"'cuda:2'.*2 CUDA device"):
        resolve_device("cuda:2", cuda_count=2)
    with pytest.raises(DeviceError, match="not one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu0", cuda_count=1)


def test_this_machine_resolves_auto_to_what_torch_reports():
    import torch

    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected


def test_precision_auto_on_a_gpu_follows_its_bf16_support():
    assert resolve_precision("auto", "cuda:0", cuda_bf16=True) == "bfloat16"
    assert resolve_precision("auto", "cuda:0", cuda_bf16=False) == "float32"
    assert resolve_precision("float32", "cuda:0", cuda_bf16=True) == "float32"


def test_scoring_batches_suit_the_device():
    assert default_score_batch("cpu") == 16
    assert default_score_batch("cuda:0") > default_score_batch("cpu")


@pytest.mark.parametrize("config", [RunConfig, lambda **kw: TournamentConfig(instruction="Say hi.", **kw)])
def test_the_config_names_the_device_field_in_its_error(config):
    assert config(device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match="device"):
        config(device="tpu")


def test_auto_and_its_meaning_share_one_loaded_model(backend):
    from models.loading import load_backend

    precision = resolve_precision("auto", "cpu")
    assert load_backend("smollm2", "auto", "cpu") is load_backend("smollm2", precision, "cpu") is backend
    assert backend.device == "cpu"
