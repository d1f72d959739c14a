"""One phantom case: labels, anatomy along z, lesions, HU values, orientation, domains."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from sam_mix_monai.data.phantom import LESION_TISSUES, Tissue, generate_case
from sam_mix_monai.utils.errors import InputError

MATRIX, SLICES = 128, 40


@pytest.fixture(scope="module")
def cases_a():
    """Four domain-a cases (LiTS labels), generated once."""
    return [generate_case(3, i, "a", MATRIX, SLICES) for i in range(4)]


@pytest.fixture(scope="module")
def cases_b():
    """Four domain-b cases (LiTS labels), generated once."""
    return [generate_case(3, i, "b", MATRIX, SLICES) for i in range(4)]


def canonical(case, arr):
    """``arr`` (stored like the case image) reoriented to RAS with nibabel."""
    return np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(arr, case.affine)).dataobj)


def eroded_mean(img, mask, iterations=1):
    m = ndi.binary_erosion(mask, iterations=iterations) if iterations else mask
    return float(img[m].mean()), int(m.sum())


def test_shapes_dtypes_and_label_values(cases_a):
    for c in cases_a:
        assert c.image.dtype == np.int16 and c.label.dtype == np.uint8
        assert c.image.shape == c.label.shape == c.tissue.shape
        assert sorted(c.image.shape) == sorted((MATRIX, MATRIX, SLICES))
        assert set(np.unique(c.label)) <= {0, 1, 2}
        assert (c.label == 1).sum() > 1000
        assert -1024 <= c.image.min() and c.image.max() <= 3071
    assert any((c.label == 2).any() for c in cases_a)


def test_totalseg_labels_merge_lesions():
    c = generate_case(3, 0, "a", 96, SLICES, layout="totalseg")
    lits = generate_case(3, 0, "a", 96, SLICES, layout="lits")
    assert set(np.unique(c.label)) <= {0, 1}
    np.testing.assert_array_equal(c.label, (lits.label > 0).astype(np.uint8))
    np.testing.assert_array_equal(c.image, lits.image)


def test_liver_absent_at_both_ends_present_in_middle(cases_a, cases_b):
    for c in cases_a + cases_b:
        lab = canonical(c, c.label)  # RAS: axis 2 runs inferior -> superior
        per_slice = lab.reshape(-1, lab.shape[2]).any(axis=0)
        assert not per_slice[:2].any() and not per_slice[-2:].any()
        assert per_slice[lab.shape[2] // 2]
        idx = np.nonzero(per_slice)[0]
        assert np.all(np.diff(idx) == 1), "liver slices must be contiguous"
        assert (idx[0], idx[-1]) == c.liver_range
        assert c.liver_slices == idx.size


def test_liver_on_patient_right_and_superior_to_kidneys(cases_a):
    for c in cases_a:
        aff = c.affine
        lab_ijk = np.argwhere(c.label > 0)
        spl_ijk = np.argwhere(c.tissue == Tissue.SPLEEN)
        kid_ijk = np.argwhere(np.isin(c.tissue, [Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA]))
        world = lambda ijk: nib.affines.apply_affine(aff, ijk)  # noqa: E731
        liver_xyz, spleen_xyz, kid_xyz = world(lab_ijk).mean(0), world(spl_ijk).mean(0), world(kid_ijk).mean(0)
        # RAS+: +x is the patient's right, +z superior
        assert liver_xyz[0] > spleen_xyz[0] + 50
        assert liver_xyz[2] > kid_xyz[2]


def test_lesions_inside_liver_and_hypodense(cases_a, cases_b):
    checked = 0
    for c in cases_a + cases_b:
        les = c.label == 2
        if les.sum() < 20:
            continue
        assert np.isin(c.tissue[les], LESION_TISSUES).all()
        ring = ndi.binary_dilation(les) & ~les
        assert (c.label[ring] > 0).mean() > 0.8, "lesions must be surrounded by liver"
        solid = c.tissue == Tissue.LESION_SOLID
        liver_mean, _ = eroded_mean(c.image, c.label == 1)
        lesion_mean = float(c.image[les].mean())
        assert lesion_mean < liver_mean - 15
        if solid.sum() > 20:
            assert float(c.image[solid].mean()) < liver_mean - 15
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("domain,lo,hi", [("a", 85, 125), ("b", 45, 85)])
def test_organ_hu_plausible(domain, lo, hi, cases_a, cases_b):
    for c in cases_a if domain == "a" else cases_b:
        img, t = c.image, c.tissue
        liver, n = eroded_mean(img, c.label == 1)
        assert n > 100 and lo <= liver <= hi
        gas = t == Tissue.GI_AIR
        if gas.sum() > 30:
            assert float(img[gas].mean()) < -500
        fat, n = eroded_mean(img, np.isin(t, [Tissue.SUBCUT_FAT, Tissue.VISC_FAT]))
        assert n > 100 and -130 < fat < -60
        muscle, _ = eroded_mean(img, t == Tissue.MUSCLE, 2)
        assert 15 < muscle < 80
        outside = img[t == Tissue.AIR]
        assert outside.mean() < -950
        aorta, _ = eroded_mean(img, t == Tissue.AORTA)
        assert aorta > liver + 30


@pytest.mark.parametrize("domain", ["a", "b"])
def test_bone_hu(domain):
    # 256 matrix: thin cortical bone survives the partial-volume blur
    c = generate_case(3, 0, domain, 256, 20)
    bone = np.isin(c.tissue, [Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE])
    assert float(c.image[bone].mean()) > 200
    assert np.percentile(c.image[bone], 99) > 400
    assert float(c.image[c.tissue == Tissue.CORTICAL_BONE].mean()) > float(c.image[c.tissue == Tissue.CANCELLOUS_BONE].mean())


def test_orientations_give_identical_anatomy():
    ref = generate_case(5, 1, "a", 96, SLICES, orientation="RAS")
    assert ref.axcodes == ("R", "A", "S")
    assert nib.aff2axcodes(ref.affine) == ("R", "A", "S")
    for codes in ("LPS", "LAS", "PLS", "ARI"):
        c = generate_case(5, 1, "a", 96, SLICES, orientation=codes)
        assert nib.aff2axcodes(c.affine) == tuple(codes)
        for a, b in ((ref.image, c.image), (ref.label, c.label)):
            ia = nib.as_closest_canonical(nib.Nifti1Image(a, ref.affine))
            ib = nib.as_closest_canonical(nib.Nifti1Image(b, c.affine))
            np.testing.assert_array_equal(np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj))
            np.testing.assert_allclose(ia.affine, ib.affine, atol=1e-6)


def test_orientations_vary_between_cases():
    codes = {generate_case(0, i, "a", 48, 20).axcodes for i in range(16)}
    assert len(codes) >= 3
    assert any(c[:2] != ("R", "A") and set(c[:2]) <= {"A", "P", "L", "R"} and c[0] in "AP" for c in codes) or len(codes) >= 4


def test_geometry_varies_and_is_plausible(cases_a, cases_b):
    for c in cases_a + cases_b:
        zooms = nib.affines.voxel_sizes(c.affine)
        inplane = sorted(zooms)[:2] if zooms.argmax() != zooms.argmin() else zooms[:2]
        p = c.patient
        assert 0.6 <= p.dx * MATRIX / 512 <= 1.0
        assert 1.0 <= p.dz <= 5.0
        assert np.allclose(sorted(zooms), sorted([p.dx, p.dx, p.dz]))
        del inplane
    widths = {round(c.patient.a, 6) for c in cases_a}
    assert len(widths) == len(cases_a)
    spacing_120 = [generate_case(1, i, d, 32, 120).patient.dz for i in range(6) for d in "ab"]
    assert all(2.0 <= s <= 3.75 for s in spacing_120)


def test_domain_b_differs_from_a(cases_a, cases_b):
    def stats(cases):
        liv, sd, aorta, frac = [], [], [], []
        for c in cases:
            m = ndi.binary_erosion(c.label == 1, iterations=2)
            liv.append(c.image[m].mean())
            sd.append(c.image[m].std())
            aorta.append(c.image[ndi.binary_erosion(c.tissue == Tissue.AORTA)].mean())
            body = c.tissue != Tissue.AIR
            frac.append(body.mean())
        return np.mean(liv), np.mean(sd), np.mean(aorta), np.mean(frac)

    la, sa, aa, fa = stats(cases_a)
    lb, sb, ab, fb = stats(cases_b)
    assert lb < la - 20  # later-arterial phase and HU offset
    assert sb > sa + 3  # noisier, coarser texture
    assert ab > aa + 60  # arterial aorta
    assert fb < fa  # body fills less of the field of view
    assert any((c.image == -1024).mean() > 0.1 for c in cases_b)  # circular FOV padding


def test_deterministic_and_case_dependent():
    a1 = generate_case(11, 2, "b", 64, 24)
    a2 = generate_case(11, 2, "b", 64, 24)
    np.testing.assert_array_equal(a1.image, a2.image)
    np.testing.assert_array_equal(a1.label, a2.label)
    np.testing.assert_array_equal(a1.affine, a2.affine)
    other = generate_case(11, 3, "b", 64, 24)
    assert other.image.shape != a1.image.shape or not np.array_equal(other.image, a1.image)
    other_seed = generate_case(12, 2, "b", 64, 24)
    assert not np.array_equal(other_seed.affine, a1.affine)


@pytest.mark.parametrize("kwargs", [{"domain": "c"}, {"matrix": 8}, {"slices": 4}])
def test_bad_arguments(kwargs):
    args = {"seed": 0, "case_id": 0, "domain": "a", "matrix": 64, "slices": 24, **kwargs}
    with pytest.raises(InputError):
        generate_case(**args)
