"""Anatomical quality checks: a synthetic torso, then real CT with its reference liver, moved and flipped."""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.inference import AxialGeometry, case_summary
from sam_mix_monai.inference.quality import anatomy_checks, extent_checks, find_landmarks


def _torso(shape=(80, 60, 30)):
    """An LPS-header torso: soft tissue body, spine posterior at the midline, liver block on the patient's right.

    LPS (DICOM) header: array x runs to the patient's left, so the patient's right is low x.
    """
    x, y, z = shape
    img = np.full(shape, -1000, np.int16)
    xx, yy = np.meshgrid(np.arange(x), np.arange(y), indexing="ij")
    body = ((xx - x / 2) / (0.45 * x)) ** 2 + ((yy - y / 2) / (0.4 * y)) ** 2 < 1
    img[body] = 30
    # LPS: array y runs posterior-wards, so the spine (posterior) sits at high y.
    img[int(x / 2) - 3:int(x / 2) + 3, int(0.7 * y):int(0.8 * y)] = 600
    mask = np.zeros(shape, np.uint8)
    mask[12:34, 15:38, 5:20] = 1  # low x = patient's right; low y = anterior
    img[mask > 0] = 100
    return img, mask, AxialGeometry(np.diag([-3.0, -3.0, 3.0, 1.0]), shape)


def test_synthetic_torso_ok_and_each_fault_named():
    img, mask, geo = _torso()
    fields, reasons = anatomy_checks(mask, img, geo)
    assert reasons == [], reasons
    assert fields["right_fraction"] == 1.0 and fields["spine_ap"] < -0.3 and fields["liver_ap"] > fields["spine_ap"]
    assert fields["below_lungs"] is None  # no lungs in this scan
    _, lr = anatomy_checks(mask[::-1], img[::-1], geo)
    assert any("patient's right" in r for r in lr) and len(lr) == 1
    _, ap = anatomy_checks(mask[:, ::-1], img[:, ::-1], geo)
    assert any("spine lies anterior" in r for r in ap) and any("posterior of the spine" in r for r in ap)
    moved = np.zeros_like(mask)
    moved[30:50, 38:50, 5:20] = 1  # over the spine
    _, bone = anatomy_checks(moved, img, geo)
    assert any("bone inside" in r for r in bone)
    air = np.zeros_like(mask)
    air[0:10, 0:10, 5:20] = 1
    _, outside = anatomy_checks(air, img, geo)
    assert any("not liver tissue" in r for r in outside) and any("fat or air" in r for r in outside)
    _, border = extent_checks(air, geo)
    assert border[-1] == "mask touches the image's in-plane border" and len(border) == 3  # also volume, area
    assert anatomy_checks(np.zeros_like(mask), img, geo) == (dict.fromkeys(
        ("right_fraction", "liver_ap", "spine_ap", "below_lungs")), [])


# --- real CT (the developers' ../shared/data/real; skipped on a user's clone) ---


@pytest.fixture(scope="module")
def patient7(ircadb_07):
    from sam_mix_monai.data.ircadb import read_ircadb_patient

    p = read_ircadb_patient(ircadb_07)
    img, liver = p.image.numpy()[0], p.liver.numpy()[0]
    return img, liver, AxialGeometry(p.affine, img.shape)


def _summary(mask, img, geo):
    return case_summary(np.ascontiguousarray(mask), geo, image=np.ascontiguousarray(img))


def test_real_reference_liver_is_ok(patient7):
    img, liver, geo = patient7
    s = _summary(liver, img, geo)
    assert s["quality"] == "ok", s["quality_reasons"]
    a = s["anatomy"]
    assert 115 < s["statistics"]["hu_mean"] < 127 and a["right_fraction"] > 0.8 and a["below_lungs"] is True
    assert a["spine_ap"] < -0.4 and a["cut_by_scan"] is None and a["liver_extent_mm"] == pytest.approx(156.8)


@pytest.mark.parametrize("how", ["rotate180", "flip_lr", "flip_ap"])
def test_real_ct_with_moved_content_is_not_ok(patient7, how):
    """Issue 14 item 8: the image content and its liver moved together, header unchanged."""
    img, liver, geo = patient7
    view = {"rotate180": np.s_[::-1, ::-1], "flip_lr": np.s_[::-1], "flip_ap": np.s_[:, ::-1]}[how]
    s = _summary(liver[view], img[view], geo)
    assert s["liver_voxels"] > 0 and s["quality"] == "check"
    if how != "flip_ap":
        assert any("patient's right" in r for r in s["quality_reasons"])
    if how != "flip_lr":
        assert any("spine lies anterior" in r for r in s["quality_reasons"])


def test_real_mask_moved_onto_bone_or_air_is_check(patient7):
    img, liver, geo = patient7
    # Patient's right is low array x (LPS); the spine is at the midline, posterior (high array y).
    onto_spine = np.roll(liver, (140, 120), axis=(0, 1))
    s = _summary(onto_spine, img, geo)
    assert s["quality"] == "check" and any("bone inside" in r for r in s["quality_reasons"]), s["quality_reasons"]
    onto_air = np.roll(liver, -150, axis=1)  # anterior, out of the body
    s = _summary(onto_air, img, geo)
    assert s["quality"] == "check" and any("not liver tissue" in r for r in s["quality_reasons"])


def test_real_scan_without_liver(patient7, ircadb_07):
    """The 40 lowest slices (pelvis, no liver): the empty reference is 'no liver found'; the right
    kidney taken for a liver there is right and soft tissue, and the scan's top slice cuts it (so its
    volume is only a lower bound): its small axial cross-section catches it."""
    from sam_mix_monai.data.ircadb import read_ircadb_structure

    img, liver, _ = patient7
    crop = np.s_[:, :, :40]
    geo = AxialGeometry(np.diag([-0.782, -0.782, 1.6, 1.0]), img[crop].shape)
    s = _summary(liver[crop], img[crop], geo)
    assert s["quality"] == "check" and s["quality_reasons"] == ["no liver found"]
    kidney = read_ircadb_structure(ircadb_07, "rightkidney").numpy()[0]
    s = _summary(kidney[crop], img[crop], geo)
    assert s["anatomy"]["cut_by_scan"] == "superior"
    assert s["quality_reasons"] == [f"largest axial cross-section {s['anatomy']['max_area_cm2']:.0f} cm² "
                                    "is small for a liver (< 50 cm²)"]


def test_real_dicom_sample_with_its_reference_is_ok(real_ct):
    from monai.transforms import ResampleToMatch

    from sam_mix_monai.data.io import read_volume

    ct = read_volume(real_ct / "dicom")
    ref = ResampleToMatch(mode="nearest")(read_volume(real_ct / "liver.nii.gz"), img_dst=ct)
    img, liver = ct.numpy()[0], ref.numpy()[0].astype(np.uint8)
    geo = AxialGeometry(np.asarray(ct.affine), img.shape)
    s = _summary(liver, img, geo)
    assert s["quality"] == "ok", s["quality_reasons"]
    assert s["anatomy"]["cut_by_scan"] == "inferior+superior"  # 20 slices, liver on all
    assert 80 < s["statistics"]["hu_mean"] < 100 and s["anatomy"]["below_lungs"] is None
    marks = find_landmarks(img, geo)
    assert marks["lung_z"] is None and marks["spine_ap"] < -0.2
    s = _summary(liver[::-1], img[::-1], geo)
    assert s["quality"] == "check"


def test_real_three_slice_ct_with_its_liver_label_is_ok(dcmqi_liver_seg):
    """3 slices of 1 mm, probably unenhanced (mean 37 HU): the lowest-HU reference of the three."""
    import SimpleITK as sitk

    from sam_mix_monai.data.io import read_volume

    ct = read_volume(dcmqi_liver_seg / "ct-3slice")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dcmqi_liver_seg / "ct-3slice")))
    ref = reader.Execute()
    seg = sitk.Resample(sitk.ReadImage(str(dcmqi_liver_seg / "liver_seg.nrrd")), ref, sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0)
    liver = np.transpose(sitk.GetArrayFromImage(seg), (2, 1, 0)).astype(np.uint8)  # (z, y, x) -> (x, y, z)
    assert int(liver.sum()) == 107_098
    geo = AxialGeometry(np.asarray(ct.affine), liver.shape)
    s = _summary(liver, ct.numpy()[0], geo)
    assert s["quality"] == "ok", s["quality_reasons"]
    assert 30 < s["statistics"]["hu_mean"] < 45
    assert _summary(liver[::-1], ct.numpy()[0][::-1], geo)["quality"] == "check"


@pytest.mark.parametrize("orientation", ["LPS", "PLS", "ARI"])
def test_phantom_reference_ok_in_any_header_orientation(orientation):
    """The phantom's liver passes in every header orientation (axis-swapped ones too), and the same
    array content under a left-right mirrored header does not."""
    from sam_mix_monai.data.phantom import generate_case

    c = generate_case(0, 1, "a", 128, 48, orientation=orientation)
    liver = (np.asarray(c.label) > 0).astype(np.uint8)
    s = _summary(liver, c.image, AxialGeometry(c.affine, c.image.shape))
    assert s["quality"] == "ok", s["quality_reasons"]
    assert s["anatomy"]["right_fraction"] > 0.7 and s["anatomy"]["spine_ap"] < -0.2 and s["anatomy"]["below_lungs"]
    mirrored = c.affine.copy()
    mirrored[0] *= -1  # world x negated: the header now puts the patient's right on the other side
    s = _summary(liver, c.image, AxialGeometry(mirrored, c.image.shape))
    assert any("patient's right" in r for r in s["quality_reasons"])
