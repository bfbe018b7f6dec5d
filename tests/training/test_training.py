"""The training loop on phantom datasets and a tiny model (a few steps each; learning itself is
tested in test_learning.py):

* a run stopped between checkpoints resumes and ends where an uninterrupted run ends;
* with the base frozen only the new class's embedding trains: the old classes compute bit for bit
  as before;
* adding classes without freezing distils the old ones and reports their Dice before and after;
* two processes train together (gloo, DistributedDataParallel) and agree on the weights.
"""

from __future__ import annotations

import csv
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from partial_labels import write_partial_datasets
from tiny import PHANTOM, tiny_model

import universal
from universal.training import NewClass, TrainSettings, train
from universal.training.datasets import Datalist, load_templates, prepare_datalist
from universal.training.loop import learning_rate_factor


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return write_partial_datasets(tmp_path_factory.mktemp("datasets"), 3, **PHANTOM)


def _templates(datasets):
    return load_templates(datasets["templates"])


def _tiny_datalist(datasets, validation_fraction: float = 0.0) -> Datalist:
    return prepare_datalist([datasets["organs"], datasets["kidneys"]], templates=_templates(datasets),
                            validation_fraction=validation_fraction)


def test_an_interrupted_run_resumes_where_it_stopped(datasets, tmp_path):
    datalist = _tiny_datalist(datasets)
    settings = TrainSettings(steps=3, warmup_steps=1, checkpoint_every=2, learning_rate=1e-3)
    whole = train(datalist, tmp_path / "whole", model=tiny_model(), settings=settings, progress=False)

    class Stop(Exception):
        pass

    def stop_at_three(step):  # after step 3, before the run's final save
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train(datalist, tmp_path / "cut", model=tiny_model(), settings=settings, progress=False,
              on_step=stop_at_three)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2  # the last checkpoint before the stop
    with pytest.raises(universal.UniversalError, match="--resume"):
        train(datalist, tmp_path / "cut", model=tiny_model(), settings=settings, progress=False)
    resumed = train(datalist, tmp_path / "cut", resume=True, progress=False)
    assert resumed.steps == whole.steps == 3

    def rows(run):
        with (run / "metrics.csv").open() as stream:
            return [(r["step"], r["learning_rate"]) for r in csv.DictReader(stream)]

    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    assert [float(r) for _, r in rows(tmp_path / "whole")] == pytest.approx(
        [1e-3 * learning_rate_factor(s, 1, 3) for s in range(3)], rel=1e-5, abs=1e-12)  # the rate each step used
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_new_classes_without_freezing_report_old_classes_before_and_after(datasets, tmp_path):
    start = tiny_model()
    both = prepare_datalist([datasets["both"], datasets["organs"]], templates=_templates(datasets),
                            validation_fraction=0.34)
    result = train(both, tmp_path / "run", model=start, progress=False,
                   add_classes=[NewClass("Kidneys", embedding=torch.randn(512))],
                   settings=TrainSettings(steps=1, checkpoint_every=0))
    assert set(result.old_classes_before) == {"Liver", "Spleen", "Stomach"}
    assert set(result.validation) == {"Liver", "Spleen", "Stomach", "Kidneys"}
    with (tmp_path / "run" / "validation.csv").open() as stream:
        assert "before/Liver" in {r["class"] for r in csv.DictReader(stream)}


def test_freezing_the_base_trains_only_the_new_class(datasets, tmp_path):
    both = prepare_datalist([datasets["both"]], templates=_templates(datasets), validation_fraction=0)
    before = tiny_model()
    start = tiny_model()
    row = torch.randn(512)
    result = train(both, tmp_path / "run", model=start, progress=False,
                   add_classes=[NewClass("Kidneys", embedding=row)],
                   settings=TrainSettings(steps=2, checkpoint_every=0, freeze_base=True, warmup_steps=0))
    taught = universal.load_model(tmp_path / "run" / "model.pt")
    assert taught.catalog.names[-1] == "Kidneys" and result.steps == 2
    assert not torch.equal(taught.class_embeddings[-1], row)  # the new class's embedding trained
    window = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(before(window), taught(window, classes=list(range(1, 6))))
    for key, value in before.state_dict().items():
        if key != "class_embeddings":
            assert torch.equal(value, taught.state_dict()[key]), key
    assert torch.equal(before.class_embeddings, taught.class_embeddings[:5])
    with pytest.raises(universal.UniversalError, match="--freeze-base"):  # and nothing to add
        train(_tiny_datalist(datasets), tmp_path / "none", model=tiny_model(), progress=False,
              settings=TrainSettings(freeze_base=True))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process(rank: int, world: int, port: int, datalist: Datalist, run_dir, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    from universal.training.distributed import process_group

    with process_group():
        result = train(datalist, run_dir, model=tiny_model(), progress=False,
                       settings=TrainSettings(steps=1, checkpoint_every=0, device="cpu"))
        results[rank] = {k: v.clone() for k, v in result.model.state_dict().items()}


def test_two_processes_train_one_model(datasets, tmp_path):
    datalist = _tiny_datalist(datasets)
    results = mp.Manager().dict()
    mp.start_processes(_process, args=(2, _free_port(), datalist, tmp_path / "run", results), nprocs=2,
                       start_method="spawn")  # joins; a failure in either process raises here
    # spawn, not fork: a forked child cannot run autograd once this process has started its threads
    assert set(results) == {0, 1}
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["processes"] == 2
    assert (tmp_path / "run" / "model.pt").is_file()


def test_training_in_processes_passes_every_setting(datasets, tmp_path):
    """torchrun's processes train with the whole settings record (every field away from its default)
    and the classes to add."""
    from dataclasses import fields

    from universal.training.distributed import train_in_processes

    both = prepare_datalist([datasets["both"]], templates=_templates(datasets), validation_fraction=0)
    settings = TrainSettings(steps=2, batch_size=1, accumulate=2, learning_rate=2e-4, weight_decay=2e-5,
                             warmup_steps=1, crop_size=(16, 16, 16), precision="float32", device="cpu", seed=3,
                             checkpoint_every=1, validate_every=1, freeze_base=True, distill=False,
                             embedding_learning_rate=2e-2, max_grad_norm=0.5)
    default = TrainSettings()
    assert all(getattr(settings, f.name) != getattr(default, f.name) for f in fields(TrainSettings))
    row = torch.randn(512)
    trained = train_in_processes(both, tmp_path, tiny_model(), settings, processes=2,
                                 add_classes=[NewClass("Kidneys", "both kidneys", row)])
    run = json.loads((tmp_path / "train" / "run.json").read_text())
    assert run["processes"] == 2
    assert run["settings"] == settings.to_record()
    assert trained.catalog.names[-1] == "Kidneys" and trained.catalog["Kidneys"].prompt == "both kidneys"
    assert not torch.equal(trained.class_embeddings[-1], row)  # trained, from the row it was given
