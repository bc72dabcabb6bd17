import pytest
import torch

from neogen import distributed
from neogen.distributed import World
from neogen.errors import NeogenError


def test_one_process_seeing_several_gpus_is_refused_with_the_launch_to_use(monkeypatch):
    """The Trainer would wrap the model in DataParallel and multiply the recipe's batch by the GPU count."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(NeogenError, match=r"sees 4 GPUs.*torchrun --nproc_per_node 4.*CUDA_VISIBLE_DEVICES=0"):
        distributed.check_single_process_devices(World())
    distributed.check_single_process_devices(World(rank=1, size=4, local_rank=1))  # one GPU per torchrun process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    distributed.check_single_process_devices(World())


def test_each_torchrun_process_gets_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.device(World(rank=3, size=4, local_rank=1)) == torch.device("cuda", 1)
    with pytest.raises(NeogenError, match=r"LOCAL_RANK=2 but this node has 2 GPU\(s\)"):
        distributed.device(World(rank=2, size=3, local_rank=2))


def test_use_device_makes_the_local_gpu_current(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert distributed.use_device(World(rank=1, size=2, local_rank=1)) == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]
