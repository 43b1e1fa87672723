"""The dataset learns the epoch however the batches are sharded: its draws come from (seed, epoch, index)."""
import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import BatchSampler, DataLoader, Dataset

from multitask.data.sampler import EpochSampler
from multitask.training import start_epoch


class Epochs(Dataset):
    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, self.epoch])


@pytest.mark.parametrize("processes", [1, 2])
def test_every_process_count_gives_the_dataset_its_epoch(processes):
    data = Epochs()
    loader = prepare_data_loader(DataLoader(data, batch_sampler=BatchSampler(EpochSampler(16, 0), 4, drop_last=True)),
                                 num_processes=processes, process_index=0, split_batches=True, put_on_device=False)
    start_epoch(loader, 3)
    batches = list(loader)
    assert {int(b[:, 1].unique()) for b in batches} == {3}
    indices = torch.cat([b[:, 0] for b in batches]).tolist()
    assert indices[: 4 // processes] == torch.randperm(16, generator=torch.Generator().manual_seed(3)).tolist()[
        : 4 // processes]  # the sampler's epoch-3 permutation (seed 0)
