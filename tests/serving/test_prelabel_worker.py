"""Pre-labelling in the background: the cache keeps whole answers under a key of the image's content,
the model and the settings, within its bound; the worker takes the most wanted image first, skips what
is cached and what failed, and waits between windows while an interactive request runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import universal
from universal.inference.windows import window_boxes
from universal.serving.prelabel import Cancelled, InteractiveFirst, Prelabeller, stepwise
from universal.serving.prelabel_cache import PrelabelCache

SETTINGS = universal.InferenceSettings()


def image_file(folder, name: str, content: bytes):
    path = folder / name
    path.write_bytes(content)
    return path


def test_the_cache_keeps_whole_answers_under_content_model_and_settings(tmp_path):
    cache = PrelabelCache(tmp_path / "cache", max_bytes=1 << 30)
    first, same = image_file(tmp_path, "a.nii.gz", b"scan one"), image_file(tmp_path, "b.nii.gz", b"scan one")
    other = image_file(tmp_path, "c.nii.gz", b"scan two")
    key = cache.key(first, "v1", SETTINGS)
    assert key == cache.key(same, "v1", SETTINGS)  # the content names it, not the file
    assert len({key, cache.key(other, "v1", SETTINGS), cache.key(first, "v2", SETTINGS),
                cache.key(first, "v1", universal.InferenceSettings(overlap=0.25))}) == 4
    assert cache.get(key) is None and key not in cache
    label_map = np.random.default_rng(0).integers(0, 9, (20, 18, 12)).astype(np.uint8)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    cache.put(key, label_map, affine, {"findings": [], "classes": {"Liver": {"voxels": 3}}})
    kept = cache.get(key)
    assert "label_map" not in vars(kept)  # read when first used: an answer sent as its kept file needs none
    assert np.array_equal(kept.label_map, label_map) and kept.label_map.dtype == np.uint8
    assert np.array_equal(kept.affine, affine) and kept.report["classes"]["Liver"]["voxels"] == 3
    assert kept.encoded is None
    sent = image_file(tmp_path, "answer.nii.gz", b"the answer as sent")
    cache.put(key, label_map, affine, {"findings": []}, encoded=sent)  # also kept as the file it is sent as
    assert cache.get(key).encoded.name == "encoded.nii.gz" and cache.get(key).encoded.read_bytes() == sent.read_bytes()
    (tmp_path / "cache" / ".incoming-x").mkdir()  # a write a crash interrupted: not an entry
    assert [entry.name for entry, _, _ in cache.entries()] == [key]
    first.write_bytes(b"scan one, edited")
    assert cache.key(first, "v1", SETTINGS) != key  # a changed file is a new image


def test_the_least_recently_used_answers_go_beyond_the_bound(tmp_path):
    rng = np.random.default_rng(1)
    cache = PrelabelCache(tmp_path / "cache", max_bytes=1 << 40)
    for name in "abc":
        cache.put(name, rng.integers(0, 255, (40, 40, 40)).astype(np.uint8), np.eye(4), {})
        time.sleep(0.02)
    one = cache.size_bytes() // 3
    cache.get("a")  # used again: the newest
    cache.max_bytes = 2 * one + one // 2
    cache.evict()
    assert sorted(entry.name for entry, _, _ in cache.entries()) == ["a", "c"]
    assert cache.size_bytes() <= cache.max_bytes


def worker(tmp_path, pending, compute):
    cache = PrelabelCache(tmp_path / "cache", max_bytes=1 << 30)
    gate = InteractiveFirst()
    return Prelabeller(cache, gate, pending, compute), cache, gate


def test_the_worker_takes_the_most_wanted_first_and_skips_failures(tmp_path):
    order = []

    def compute(image, key, before_step):
        before_step()
        order.append(image)
        if image == "broken":
            raise ValueError("not a CT")
        cache.put(key, np.zeros((2, 2, 2), np.uint8), np.eye(4), {})

    prelabeller, cache, _ = worker(tmp_path, lambda: [("wanted", "k1"), ("broken", "k2"), ("later", "k3")], compute)
    prelabeller.start()
    try:
        deadline = time.monotonic() + 20
        while prelabeller.status()["queued"] or prelabeller.current or len(order) < 3:
            assert time.monotonic() < deadline, prelabeller.status()
            time.sleep(0.05)
    finally:
        prelabeller.stop()
    assert order == ["wanted", "broken", "later"]  # each once: cached ones and the failure are not taken again
    status = prelabeller.status()
    assert (status["done"], status["failed"], status["cached"], status["queued"]) == (2, 1, 2, 0)


def test_background_windows_wait_while_an_interactive_request_runs(tmp_path):
    windows, release = [], threading.Event()

    def compute(image, key, before_step):
        for _ in range(50):
            before_step()
            windows.append(time.monotonic())
            time.sleep(0.01)
        release.set()

    prelabeller, _, gate = worker(tmp_path, lambda: [("big", "k")], compute)
    with gate.interactive():  # the request started first: nothing runs in the background
        prelabeller.start()
        time.sleep(0.3)
        assert windows == []
    while len(windows) < 5:
        time.sleep(0.01)
    with gate.interactive():
        held = time.monotonic()
        before = len(windows)
        time.sleep(0.3)
        assert len(windows) <= before + 1  # at most the window already running finishes
    assert release.wait(20)
    assert any(t > held + 0.3 for t in windows)  # and the work goes on afterwards
    prelabeller.stop()


def test_stopping_cancels_between_windows(tmp_path):
    started, cancelled = threading.Event(), threading.Event()

    def compute(image, key, before_step):
        started.set()
        try:
            while True:
                before_step()
                time.sleep(0.01)
        except Cancelled:
            cancelled.set()
            raise

    prelabeller, _, _ = worker(tmp_path, lambda: [("big", "k")], compute)
    prelabeller.start()
    assert started.wait(10)
    prelabeller.stop()
    assert cancelled.is_set() and prelabeller.done == 0 and not prelabeller.failed


def test_the_segmenter_calls_before_window_once_per_network_call():
    torch.manual_seed(0)
    spec = universal.InputSpec(spacing=(12.0,) * 3, window_size=(16, 16, 16))
    model = universal.UniversalModel("unet", width=4, class_embeddings=torch.randn(32, 512), input_spec=spec)
    calls = []
    segmenter = universal.Segmenter(model, universal.InferenceSettings(skip_air=False, localize=False, compile="off"),
                                    progress=False, before_window=lambda: calls.append(1))
    image = torch.rand(1, 40, 40, 24)
    segmenter.predict_masks(image, [0, 1])
    assert len(calls) == len(window_boxes((40, 40, 24), (16, 16, 16), 0.5)) > 1

    def stop():
        raise Cancelled

    with pytest.raises(Cancelled):
        universal.Segmenter(model, universal.InferenceSettings(compile="off"), progress=False,
                            before_window=stop).predict_masks(image, [0])


def test_a_request_that_steps_aside_lets_the_background_go_on():
    gate = InteractiveFirst()
    with gate.interactive():
        assert gate.busy and not gate.wait_until_idle(timeout=0.05)
        with gate.stepped_aside():
            assert not gate.busy and gate.wait_until_idle(timeout=0.05)
        assert gate.busy
    assert not gate.busy


def test_stepwise_calibration_steps_before_each_window():
    steps = []
    windows = stepwise(lambda spec, count, seed: [np.full((1, 1, 2, 2, 2), i, np.float32) for i in range(count)],
                       lambda: steps.append(1))(None, 3, 0)
    assert len(windows) == 3 and not steps
    assert [float(w.max()) for w in windows] == [0, 1, 2] and steps == [1, 1, 1]
    assert float(windows[1].max()) == 1 and len(steps) == 4


def test_preparation_goes_first_and_its_failure_does_not_stop_pre_labelling(tmp_path):
    order = []

    def prepare(before_step):
        before_step()
        order.append("prepare")
        raise RuntimeError("no int8 here")

    def compute(image, key, before_step):
        order.append(image)
        cache.put(key, np.zeros((2, 2, 2), np.uint8), np.eye(4), {})

    cache = PrelabelCache(tmp_path / "cache", max_bytes=1 << 30)
    prelabeller = Prelabeller(cache, InteractiveFirst(), lambda: [("a", "k1")], compute, prepare=prepare)
    prelabeller.start()
    try:
        deadline = time.monotonic() + 20
        while "a" not in order:
            assert time.monotonic() < deadline, order
            time.sleep(0.05)
    finally:
        prelabeller.stop()
    assert order[:2] == ["prepare", "a"] and prelabeller.done == 1
