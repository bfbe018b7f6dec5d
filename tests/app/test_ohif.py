"""The real OHIF v3 that MONAI Label serves at /ohif/, in headless Chromium, over the app's DICOMweb
proxy to Orthanc: Auto-Segmentation and Class Prompts run from the MONAI Label panel, and every
segment the viewer shows holds, voxel for voxel, what ``universal segment`` gives its class on the
same series with the same model (the learning test's, whose classes fill their own regions); so does
each segment of the app's DICOM SEG once stored in the PACS and opened by OHIF's SEG loader. The
viewer's segments are read from OHIF's own services (``window.services``, which OHIF's app sets) and
cornerstone's cache (``window.cornerstone``). A screenshot of the overlay is kept as a test artefact."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pydicom
import pytest
import torch
from app_server import start_server, wait_until
from browser import artefacts, headless_chromium, require_chromium
from dicom_series import write_ct_series
from orthanc import running_orthanc

import universal
from universal.io.dicom import read_series
from universal.io.scans import LPS_TO_RAS
from universal.synth import make_phantom

RELEASED = "clip_driven_universal_unet.pth"
PHANTOM = {"shape": (64, 64, 48), "spacing": (6.4, 6.4, 10.0)}  # the learned model's phantoms

SEGMENTS_JS = """
const found = window.services.segmentationService.getSegmentations();
if (!found.length) return null;
const segmentation = found[0];
const volume = window.cornerstone.cache.getVolume(segmentation.representationData.Labelmap.volumeId);
const data = volume.voxelManager.getCompleteScalarDataArray();
const names = {};
for (const segment of Object.values(segmentation.segments)) if (segment) names[segment.segmentIndex] = segment.label;
return {names: names, voxels: Array.from(data), dimensions: volume.dimensions, origin: volume.origin,
        direction: volume.direction, spacing: volume.spacing};
"""


# A segmentation OHIF made from a DICOM SEG holds one derived image a CT slice (Labelmap.imageIds), each
# naming the slice it covers (referencedImageId), whose plane cornerstone's metadata gives (read from the
# OHIF build MONAI Label serves: segmentationService.createSegmentationForSEGDisplaySet)
SEG_SEGMENTS_JS = """
const segmentation = window.services.segmentationService.getSegmentations()
    .find(s => s.segmentationId === arguments[0]);
if (!segmentation) return null;
const names = {};
for (const segment of Object.values(segmentation.segments)) if (segment) names[segment.segmentIndex] = segment.label;
const slices = segmentation.representationData.Labelmap.imageIds.map(id => {
  const image = window.cornerstone.cache.getImage(id);
  const plane = window.cornerstone.metaData.get('imagePlaneModule', image.referencedImageId);
  return {voxels: Array.from(image.getPixelData()), rows: image.rows, columns: image.columns,
          position: plane.imagePositionPatient, row: plane.rowCosines, column: plane.columnCosines,
          spacing: [plane.rowPixelSpacing, plane.columnPixelSpacing]};
});
return {names: names, slices: slices};
"""

# OHIF's loader of a DICOM SEG display set (extension-cornerstone-dicom-seg, getSopClassHandlerModule:
# displaySet.load reads the SEG with dcmjs and makes a segmentation whose id is the display set's UID),
# which the viewer runs when the annotator opens the SEG's thumbnail
LOAD_SEG_JS = """
const done = arguments[arguments.length - 1];
const seg = window.services.displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SEG');
if (!seg) { done(null); return; }
seg.load({headers: {}}).then(() => done(seg.displaySetInstanceUID), error => done('failed: ' + error));
"""


@dataclass
class Viewer:
    driver: object  # selenium's Chrome
    server: object  # app_server.Server
    orthanc: object  # orthanc.Orthanc
    folder: Path  # the CT series, as files
    study: str  # its StudyInstanceUID


@pytest.fixture(scope="module")
def viewer(learned, tmp_path_factory, random_clip_weights):
    """A browser and the app over Orthanc, which holds one phantom CT series."""
    require_chromium()
    root = tmp_path_factory.mktemp("ohif")
    with running_orthanc(root) as orthanc:
        phantom = make_phantom(9004, **PHANTOM)
        write_ct_series(phantom.image, phantom.affine, root / "ct")
        orthanc.client().store_instances([pydicom.dcmread(path) for path in sorted((root / "ct").iterdir())])
        (root / "model").mkdir()
        shutil.copy(learned / "model.pt", root / "model" / RELEASED)
        env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
               "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights),
               "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "dicom")}
        server = start_server(root, orthanc.dicomweb, {"model_dir": str(root / "model")}, env)
        try:
            with headless_chromium(root / "chromium") as driver:
                driver.get(f"{server.url}/info/")  # the panel's own memory of its server, as after a first visit
                driver.add_cookie({"name": "MONAILABEL_SERVER_URL", "value": quote(f"{server.url}/", safe="/"),
                                   "path": "/"})
                yield Viewer(driver, server, orthanc, root / "ct",
                             str(read_series(root / "ct")[0].StudyInstanceUID))
        finally:
            server.stop()


def panel(driver):
    """The MONAI Label panel on screen (OHIF may keep a hidden copy while it lays out its panels)."""
    from selenium.webdriver.common.by import By

    shown = [element for element in driver.find_elements(By.CSS_SELECTOR, ".monaiLabelPanel") if element.is_displayed()]
    if not shown:
        raise AssertionError("no MONAI Label panel on screen")
    return shown[0]


def open_study(viewer: Viewer, *, connected: bool = True) -> None:
    """The study opened afresh in OHIF's MONAI Label mode and (``connected``) the panel connected: its
    segmentation starts empty (the panel makes it on connecting, MonaiLabelPanel.tsx onInfo)."""
    viewer.driver.get(f"{viewer.server.url}/ohif/monai-label?StudyInstanceUIDs={viewer.study}")
    wait_until(lambda: viewer.driver.execute_script(
        "return window.services && window.services.displaySetService.getActiveDisplaySets().length"), 120,
        "the study's images")
    if connected:
        connect(viewer.driver)


def connect(driver) -> None:
    """What an annotator does first: confirm OHIF's notice and press the panel's connect button (the
    panel reads the server's address from the cookie it keeps, SettingsTable.tsx; OHIF may still be
    laying out its panels, so the button is pressed again until the panel shows the server's models)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def connected() -> bool:
        try:
            for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Confirm and Hide']"):
                button.click()
            panel(driver).find_element(By.CSS_SELECTOR, ".settingsTable .actionButton").click()
            time.sleep(1)
            return "Auto-Segmentation" in panel(driver).text
        except (AssertionError, StaleElementReferenceException):
            return False

    wait_until(connected, 90, "the panel connected")


def press(driver, element) -> None:
    """A click the page receives even while one of OHIF's notices lies over the element."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)


def run_buttons(driver) -> list:
    from selenium.webdriver.common.by import By

    return [b for b in panel(driver).find_elements(By.CSS_SELECTOR, "button.actionButton")
            if b.text.strip() == "Run" and b.is_displayed()]


def shown_segments(driver) -> dict:
    """The viewer's segments {name: mask on its volume grid} once they hold voxels, and the grid."""

    def ready():
        found = driver.execute_script(SEGMENTS_JS)
        return found if found and any(found["voxels"]) else None

    found = wait_until(ready, 180, "the segments' voxels")
    nx, ny, nz = found["dimensions"]
    voxels = np.asarray(found["voxels"], np.uint8).reshape(nz, ny, nx).transpose(2, 1, 0)  # (i, j, k)
    grid = np.eye(4)
    grid[:3, :3] = np.asarray(found["direction"], float).reshape(3, 3).T * np.asarray(found["spacing"], float)
    grid[:3, 3] = found["origin"]
    segments = {name: voxels == int(index) for index, name in found["names"].items()}
    return {"grid": grid, "segments": segments}


def shown_seg_segments(driver, segmentation: str) -> dict:
    """The segments {name: mask} of the ``segmentation`` OHIF made from a SEG, its slices stacked in
    order along their normal, and the stack's grid (LPS mm)."""
    found = wait_until(lambda: driver.execute_script(SEG_SEGMENTS_JS, segmentation), 60, "the SEG's segments")
    slices = found["slices"]
    row, column = np.asarray(slices[0]["row"], float), np.asarray(slices[0]["column"], float)
    normal = np.cross(row, column)
    slices.sort(key=lambda plane: float(np.dot(plane["position"], normal)))
    rows, columns = slices[0]["rows"], slices[0]["columns"]
    voxels = np.stack([np.asarray(plane["voxels"], np.uint8).reshape(rows, columns).T for plane in slices], axis=-1)
    first, last = (np.asarray(slices[i]["position"], float) for i in (0, -1))
    row_spacing, column_spacing = slices[0]["spacing"]
    grid = np.eye(4)
    grid[:3, 0], grid[:3, 1] = row * column_spacing, column * row_spacing  # i along a row, j down a column
    grid[:3, 2] = (last - first) / max(len(slices) - 1, 1)
    grid[:3, 3] = first
    return {"grid": grid, "segments": {name: voxels == int(index) for index, name in found["names"].items()}}


def on_viewer_grid(label_map: np.ndarray, affine: np.ndarray, grid: np.ndarray, shape) -> np.ndarray:
    """``label_map`` (on RAS ``affine``) sampled at the viewer volume's voxels (LPS ``grid``)."""
    index = np.indices(shape).reshape(3, -1)
    world = grid @ np.vstack([index, np.ones(index.shape[1])])  # LPS mm
    ours = np.linalg.inv(affine) @ (LPS_TO_RAS @ world)
    ijk = np.rint(ours[:3]).astype(int)
    assert np.allclose(ours[:3], ijk, atol=1e-3), "the viewer's grid is not the series' grid"
    return label_map[ijk[0], ijk[1], ijk[2]].reshape(shape)


def expected(server, folder: Path, classes=None):
    """``universal segment`` on the series with the served model (one thread, as the server computes)."""
    weights = server.get("/info/").json()["universal"]["weights"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scan = universal.read_scan(folder)
        result = universal.Segmenter(universal.load_model(weights), progress=False)(scan, classes)
        return result.label_map, scan.affine, universal.load_model(weights).catalog
    finally:
        torch.set_num_threads(threads)


def assert_named_right(shown: dict, label_map, affine, catalog, present: list[str]) -> None:
    segments = shown["segments"]
    any_shape = next(iter(segments.values())).shape
    ours = on_viewer_grid(label_map, affine, shown["grid"], any_shape)
    assert sum(mask.any() for mask in segments.values()) >= 3  # regions of their own, not one class everywhere
    for name, mask in segments.items():
        truth = ours == catalog[name].id if name in present else np.zeros_like(mask)
        assert np.array_equal(mask, truth), name


def test_auto_segmentation_shows_the_right_name_on_every_voxel(viewer):
    open_study(viewer)
    press(viewer.driver, run_buttons(viewer.driver)[0])  # Auto-Segmentation, the tab open at start
    shown = shown_segments(viewer.driver)
    label_map, affine, catalog = expected(viewer.server, viewer.folder)
    assert set(shown["segments"]) == set(catalog.names)
    assert_named_right(shown, label_map, affine, catalog, catalog.names)
    viewer.driver.save_screenshot(str(artefacts() / "ohif-auto-segmentation.png"))


def test_class_prompts_show_the_ticked_classes_under_their_names(viewer):
    """The break this guards: OHIF names a voxel by the class whose /info id it holds, so liver
    voxels showed as "Right Kidney" when a subset's values were renumbered 1, 2, 3."""
    from selenium.webdriver.common.by import By

    driver = viewer.driver
    open_study(viewer)
    ticked = ["Liver", "Right Kidney", "Stomach"]
    tab = ".//label[contains(@class, 'tab-label') and text()='Class Prompts']"
    press(driver, panel(driver).find_element(By.XPATH, tab))

    def class_rows():  # {class name: its row} once the tab shows them
        rows = {row.text.strip(): row for row in panel(driver).find_elements(By.CSS_SELECTOR, ".optionsTable tr")
                if row.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")}
        return rows if set(ticked) <= set(rows) else None

    rows = wait_until(class_rows, 30, "the classes' rows")
    for name in ticked:
        press(driver, rows[name].find_element(By.CSS_SELECTOR, "input[type=checkbox]"))
    checked = sorted(name for name, row in rows.items()
                     if row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").is_selected())
    assert checked == sorted(ticked), (checked, sorted(rows))
    press(driver, run_buttons(driver)[-1])  # the Class Prompts tab's own Run
    shown = shown_segments(driver)
    label_map, affine, catalog = expected(viewer.server, viewer.folder, ticked)
    assert_named_right(shown, label_map, affine, catalog, ticked)
    driver.save_screenshot(str(artefacts() / "ohif-class-prompts.png"))


def test_a_seg_the_app_stores_in_the_pacs_opens_in_ohif_with_its_names(viewer, tmp_path):
    """The app's prediction as DICOM SEG (``result_extension .dcm``), stored in the PACS, read by
    OHIF's own SEG loader: each segment OHIF shows is named by its class and holds its voxels."""
    series = str(read_series(viewer.folder)[0].SeriesInstanceUID)
    answer = viewer.server.post("/infer/universal", params={"image": series, "output": "image"},
                                data={"params": json.dumps({"result_extension": ".dcm"})})
    assert answer.status_code == 200, answer.text
    (tmp_path / "seg.dcm").write_bytes(answer.content)
    viewer.orthanc.client().store_instances([pydicom.dcmread(tmp_path / "seg.dcm")])
    open_study(viewer, connected=False)
    driver = viewer.driver
    driver.set_script_timeout(120)
    segmentation = wait_until(lambda: driver.execute_async_script(LOAD_SEG_JS), 60, "the SEG loaded")
    assert not segmentation.startswith("failed"), segmentation
    shown = shown_seg_segments(driver, segmentation)
    label_map, affine, catalog = expected(viewer.server, viewer.folder)
    present = [catalog[int(v)].name for v in np.unique(label_map) if v]
    assert sorted(shown["segments"]) == sorted(present)
    assert_named_right(shown, label_map, affine, catalog, present)
    driver.save_screenshot(str(artefacts() / "ohif-dicom-seg.png"))
