"""Whole-scan inference: blending as MONAI's sliding window, and geometry end to end with an oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from universal import Catalog, InferenceSettings, InputSpec, Scan, Segmenter, UniversalModel
from universal.inference.preprocess import preprocessing, to_scan_blocks, to_scan_grid
from universal.inference.report import class_statistics, lesion_findings
from universal.inference.windows import box_key, pad_to_window
from universal.synth import make_phantom

CATALOG = Catalog.default()


class ConvNet(torch.nn.Module):
    """A stand-in network: one 3×3×3 convolution to K channels, any window size."""

    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, classes, 3, padding=1)

    def forward(self, x, classes=None):
        out = self.conv(x)
        return out if classes is None else out[:, [c - 1 for c in classes]]


def conv_segmenter(roi, overlap=0.5, batch_size=1) -> Segmenter:
    """Every window computed (no localisation), in float32: the reference path."""
    model = UniversalModel("unet", width=8, input_spec=InputSpec(window_size=roi))
    settings = InferenceSettings(overlap=overlap, batch_size=batch_size, localize=False, precision="float32")
    segmenter = Segmenter(model, settings, progress=False)
    net = ConvNet(len(CATALOG))
    segmenter.window_logits = lambda windows, boxes, channels: net(windows, [c + 1 for c in channels])
    return segmenter, net


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch_size"),
    [((40, 36, 50), (16, 16, 16), 0.5, 3), ((12, 20, 40), (16, 16, 24), 0.25, 1)],  # second: padded along x
)
def test_blending_equals_monai_sliding_window(shape, roi, overlap, batch_size):
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    segmenter, net = conv_segmenter(roi, overlap, batch_size)
    channels = [0, 5, 31]
    slabs = list(segmenter.blended_logits(image, channels))
    assert len(slabs) > 1  # the band moved along z
    ours = torch.cat([logits for _, logits in slabs], dim=-1)
    assert [d.start for d, _ in slabs] == sorted(d.start for d, _ in slabs) and slabs[-1][0].stop == shape[2]
    with torch.no_grad():
        expected = sliding_window_inference(image[None], roi, batch_size, lambda x: net(x, [1, 6, 32]),
                                            overlap=overlap, mode="gaussian", sigma_scale=0.125)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    masks = segmenter.predict_masks(image, channels)
    assert masks.dtype == bool and np.array_equal(masks, (torch.sigmoid(expected) > 0.5).numpy())


def test_scan_grid_resampling_inverts_reorientation_and_zoom():
    rng = np.random.default_rng(0)
    scan_affine = np.array([[0.0, 0.0, 3.0, 10.0], [-2.0, 0.0, 0.0, 40.0], [0.0, -2.0, 0.0, 5.0], [0, 0, 0, 1]])
    label = rng.integers(0, 4, size=(20, 16, 12)).astype(np.uint8)
    data = {key: MetaTensor(torch.from_numpy(value.astype(np.float32))[None], affine=torch.as_tensor(scan_affine))
            for key, value in (("image", np.zeros(label.shape)), ("label", label))}  # 0 HU: nothing is cropped
    model_space = preprocessing(InputSpec(spacing=(1.5, 1.0, 1.0)), label_keys=["label"])(data)["label"]
    back = to_scan_grid(model_space[0].numpy().round().astype(np.uint8), np.asarray(model_space.affine),
                        scan_affine, label.shape)
    # 2 mm → 1 mm and 3 mm → 1.5 mm are exact halvings: every voxel comes back to where it started
    assert np.array_equal(back, label)


def oracle_segmenter(scan: Scan, truth_label: np.ndarray, **settings) -> Segmenter:
    """A segmenter whose windows are answered from the phantom's own label in model space, without
    post-processing. Model space at 3 mm with 48³ windows, overlap 0.25: the geometry is the same code
    at any spacing, and 8× fewer model-space voxels than at 1.5 mm keep the test short. The boxes of
    the windows it answered are kept in ``segmenter.answered``."""
    model = UniversalModel("unet", width=8, input_spec=InputSpec(spacing=(3.0, 3.0, 3.0), window_size=(48, 48, 48)))
    settings = {"overlap": 0.25, "postprocess": False, **settings}
    segmenter = Segmenter(model, InferenceSettings(**settings), progress=False)
    segmenter.answered = []
    spec = model.input_spec
    affine = torch.as_tensor(scan.affine)
    data = {key: MetaTensor(torch.from_numpy(value.astype(np.float32))[None], affine=affine)
            for key, value in (("image", scan.image), ("label", truth_label))}
    carried = preprocessing(spec, label_keys=["label"])(data)["label"][0].round().long()
    truth = torch.zeros((len(CATALOG), *carried.shape))
    for info in CATALOG:
        truth[info.id - 1] = (carried == info.id).float()
    for info in CATALOG:  # a lesion lies in its organ: the organ's channel covers it too
        for parent in info.parents:
            truth[CATALOG[parent].id - 1] += truth[info.id - 1]
    padded, _ = pad_to_window(truth.clamp(max=1).to(torch.uint8), spec.window_size)

    def answer(windows, boxes, channels):
        segmenter.answered.extend(box_key(box) for box in boxes)
        return torch.stack([padded[(channels, *box)].float() * 40 - 20 for box in boxes])

    segmenter.window_logits = answer
    return segmenter


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.mark.parametrize(
    ("orientation", "shape", "spacing"),
    [("RAS", (60, 50, 36), (4.0, 4.0, 5.0)), ("LPS", (80, 66, 18), (3.0, 3.0, 10.0))],
    ids=["RAS", "LPS-anisotropic"],
)
def test_oracle_label_map_matches_the_phantom_on_its_grid(orientation, shape, spacing):
    phantom = make_phantom(3, shape=shape, spacing=spacing, orientation=orientation, lesions=True)
    scan = Scan(phantom.image.astype(np.float32), phantom.affine, "oracle")
    result = oracle_segmenter(scan, phantom.label)(scan)
    assert result.label_map.shape == phantom.label.shape and result.label_map.dtype == np.uint8
    scores = {CATALOG[i].name: dice(result.label_map == i, phantom.label == i) for i in phantom.class_ids()}
    assert min(scores.values()) >= 0.95, scores
    report = result.report["classes"]["Liver"]
    assert report["voxels"] == np.count_nonzero(result.mask("Liver"))
    assert report["volume_ml"] == pytest.approx(report["voxels"] * np.prod(spacing) / 1000, rel=1e-3)


def test_localised_classes_and_skipped_air_give_the_full_answer_with_fewer_windows():
    """A phantom in a wide field of air, with a scrap of tissue in the far corner so that the crop to
    the body keeps the air: asking for two organs runs the coarse grid, then only the windows that
    reach them; air-only windows never run; the masks are those of the full pass."""
    phantom = make_phantom(5, shape=(72, 60, 30), spacing=(6.0, 6.0, 8.0))
    image = np.full((112, 96, 30), -1000.0, dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    image[:72, :60], label[:72, :60] = phantom.image, phantom.label
    image[-3:, -3:] = 40.0
    scan = Scan(image, phantom.affine, "air")
    classes = ["Liver", "Spleen"]
    full = oracle_segmenter(scan, label, localize=False, skip_air=False)
    fast = oracle_segmenter(scan, label)
    reference, result = full(scan, classes), fast(scan, classes)
    for name in classes:
        assert np.array_equal(result.mask(name), reference.mask(name)), name
        assert dice(result.mask(name), label == CATALOG[name].id) > 0.95
    assert len(set(fast.answered)) == len(fast.answered)  # the coarse grid's windows are not run twice
    assert len(fast.answered) < len(full.answered) / 2, (len(fast.answered), len(full.answered))
    everything = oracle_segmenter(scan, label, skip_air=False)  # all classes: no localisation
    skipped = oracle_segmenter(scan, label)
    assert np.array_equal(skipped(scan).label_map, everything(scan).label_map)
    assert len(skipped.answered) < len(everything.answered) / 2


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_a_mask_as_blocks_is_the_whole_grids_mask_cropped(orientation):
    """``to_scan_blocks``, expanded, gives the part of ``to_scan_grid``'s answer that holds the mask, and
    nothing outside it is lost: upsampled, downsampled, flipped and permuted axes, empty and edge masks;
    the report's figures on the blocks are those on the whole grid."""
    rng = np.random.default_rng(0)
    scan_affine = np.diag([0.8, 0.8, 2.5, 1.0]) if orientation == "RAS" else np.diag([-0.8, -0.8, 2.5, 1.0])
    scan_shape = (70, 64, 30)
    volume_affine = np.array([[0, 1.5, 0, 3.0], [-1.5, 0, 0, 40.0], [0, 0, 1.5, -2.0], [0, 0, 0, 1]])
    cases = [np.zeros((30, 36, 50), bool), np.ones((30, 36, 50), bool)]
    for _ in range(6):
        mask = np.zeros((30, 36, 50), bool)
        corner = rng.integers(0, (25, 30, 44))
        mask[tuple(slice(c, c + int(rng.integers(1, 8))) for c in corner)] = True
        mask &= rng.random(mask.shape) < 0.7
        cases.append(mask)
    for mask in cases:
        whole = to_scan_grid(mask, volume_affine, scan_affine, scan_shape)
        blocks = to_scan_blocks(mask, volume_affine, scan_affine, scan_shape)
        crop = blocks.expanded()
        assert crop.sum() == whole.sum() and blocks.core.size <= mask.size
        if crop.size:
            box = tuple(slice(c, c + n) for c, n in zip(blocks.corner, crop.shape, strict=True))
            assert np.array_equal(whole[box], crop)
        assert class_statistics(blocks.core, scan_affine, blocks.repeats) == class_statistics(whole, scan_affine)
        assert lesion_findings(blocks.core, scan_affine, blocks.corner, blocks.repeats) == \
            lesion_findings(whole, scan_affine)


def test_a_mask_on_an_oblique_scan_is_held_whole():
    rng = np.random.default_rng(1)
    turn = np.radians(30)
    scan_affine = np.array([[np.cos(turn), -np.sin(turn), 0, 0], [np.sin(turn), np.cos(turn), 0, 0], [0, 0, 2.5, 0],
                            [0, 0, 0, 1]])
    volume_affine = np.diag([1.5, 1.5, 1.5, 1.0])
    mask = rng.random((20, 20, 12)) < 0.3
    whole = to_scan_grid(mask, volume_affine, scan_affine, (30, 30, 8))
    blocks = to_scan_blocks(mask, volume_affine, scan_affine, (30, 30, 8))
    assert np.array_equal(blocks.expanded(), whole) and whole.any()
    found = lesion_findings(blocks.core, scan_affine, blocks.corner, blocks.repeats)
    assert found == lesion_findings(whole, scan_affine) and found["count"] > 1
