"""``volume3d`` of a volume-mode SAM-Mix through the ``sam-mix infer`` path, on cases put back together from a store."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt, ornt_transform

from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.engines.evaluate import evaluate_checkpoint
from sam_mix_monai.inference import AxialGeometry, VolumeSliceInferer
from sam_mix_monai.inference.store_volumes import evaluate_checkpoint_volumes, store_cases, store_window
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import IMAGE_SIZE, case_store, phantom, tiny_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two held-out phantom cases (LPS headers, 64 px: the store grid is the CT grid) and their NIfTI files."""
    return case_store(tmp_path_factory.mktemp("store"), "all", case_ids=(5, 6), orientation="LPS")


@pytest.fixture(scope="module")
def volume_result(store):
    """The default evaluation of the tiny (volume prompt mode) SAM-Mix, and the volume path's calls."""
    import sam_mix_monai.inference.volume_mode as vm

    calls, original = [], vm.segment_volume_prompt

    def counted(volume, *args, **kwargs):
        calls.append(volume.meta["filename_or_obj"])
        return original(volume, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vm, "segment_volume_prompt", counted)
        res = evaluate_checkpoint_volumes(tiny_checkpoint(), store[0], ["volume3d"], "test", "cpu")
    return res, calls


@pytest.mark.parametrize("matrix", [IMAGE_SIZE, 96])  # 96: the store's slices are resized CT slices
def test_the_volume_gives_back_the_store_slices(tmp_path, matrix):
    path, _ = case_store(tmp_path, "all", case_ids=(5, 6), orientation="LPS", matrix=matrix)
    table = SliceTable(path)
    window = store_window(table)
    inferer = VolumeSliceInferer(image_size=IMAGE_SIZE, window=window)
    cases = list(store_cases(path, "test"))
    assert [c.case_id for c in cases] == ["5", "6"]
    for case in cases:
        affine = np.asarray(case.image.affine, dtype=np.float64)
        assert nib.aff2axcodes(affine) == ("R", "A", "S") and torch.equal(case.label.affine, case.image.affine)
        geo = AxialGeometry(affine, case.image.shape[1:])
        assert geo.depth == len(case.rows) and list(table.slice_index[case.rows]) == list(range(geo.depth))
        images, masks = table.read_many(case.rows)
        # the slices the volume path reads, in its order, are the store's, and so are the network inputs
        assert np.array_equal(geo.read_slab(case.label[0].numpy(), 0, geo.depth), masks.numpy())
        x = inferer.preprocess(geo.read_slab(case.image[0].numpy(), 0, geo.depth), IMAGE_SIZE)
        assert x.shape == (geo.depth, 1, IMAGE_SIZE, IMAGE_SIZE)
        assert torch.allclose(x[:, 0], images, atol=1e-5, rtol=0)
        sp = case.spacing
        assert geo.ras_spacing == pytest.approx((sp[1], sp[0], sp[2]))
        assert float(case.image.min()) >= window[0] - window[1] / 2 and float(case.image.max()) > 100  # HU
        if matrix == IMAGE_SIZE:  # no resize: the original CT, reoriented from its LPS header to RAS
            c = phantom(int(case.case_id), "LPS", matrix)
            to_ras = ornt_transform(axcodes2ornt(("L", "P", "S")), axcodes2ornt(("R", "A", "S")))
            ref = nib.orientations.apply_orientation(c.label > 0, to_ras)
            assert np.array_equal(case.label[0].numpy(), ref)
            hu = nib.orientations.apply_orientation(np.clip(c.image, -160, 240).astype(np.float32), to_ras)
            assert np.allclose(case.image[0].numpy(), hu, atol=0.3)  # float16 store pixels
            assert np.allclose(affine[:3, :3], np.diag([sp[1], sp[0], sp[2]]), atol=1e-6)


def test_a_volume_mode_sam_mix_is_scored_by_the_infer_path(store, volume_result):
    from monai.metrics import compute_dice

    from sam_mix_monai.inference.segmenter import Segmenter

    res, calls = volume_result
    assert calls == ["5", "6"]  # segment_volume_prompt, once per case
    assert res["volume3d_prompt_mode"] == "volume" and res["protocols"] == ["volume3d"]
    assert "slice2d_dice" not in res["metrics"] and res["cases"] == 2
    assert [r["case_id"] for r in res["volume3d_cases"]] == ["5", "6"]
    # sam-mix infer's Segmenter on the original NIfTI scores the same (the store grid is the CT grid here)
    seg = Segmenter(tiny_checkpoint(), device="cpu", encoder_backend="torch")
    for row in res["volume3d_cases"]:
        image, label = store[1][row["case_id"]]
        pred = torch.from_numpy(np.asarray(seg.predict(image).mask.dataobj) > 0)[None, None].float()
        ref = torch.from_numpy(np.asarray(nib.load(str(label)).dataobj) > 0)[None, None].float()
        infer_dice = float(compute_dice(pred, ref))
        print(f"case {row['case_id']}: store volume Dice {row['dice']:.4f}, infer on the NIfTI {infer_dice:.4f}")
        assert 0.1 < infer_dice < 1.0
        assert row["dice"] == pytest.approx(infer_dice, abs=2e-3)  # float16 store pixels


def test_slice_mode_keeps_the_stacked_per_slice_numbers(store, volume_result):
    res = evaluate_checkpoint_volumes(tiny_checkpoint(), store[0], ["slice2d", "volume3d"], "test", "cpu",
                                      prompt_mode="slice")
    former = evaluate_checkpoint(tiny_checkpoint(), store[0], ["slice2d", "volume3d"], "test", "cpu")
    assert res["volume3d_prompt_mode"] == "slice"
    assert res["metrics"] == former["metrics"] and res["volume3d_cases"] == former["volume3d_cases"]
    assert res["metrics"]["volume3d_dice"] != volume_result[0]["metrics"]["volume3d_dice"]  # another path
    # with slice2d asked too, the volume mode keeps the per-slice slice2d and replaces only volume3d
    both = evaluate_checkpoint_volumes(tiny_checkpoint(), store[0], ["slice2d", "volume3d"], "test", "cpu")
    assert both["metrics"]["slice2d_dice"] == former["metrics"]["slice2d_dice"]
    assert both["volume3d_cases"] == volume_result[0]["volume3d_cases"]


def test_slab_stores_and_other_models(tmp_path):
    from sam_mix_monai.networks import ModelConfig, build_model

    slab, _ = case_store(tmp_path, 0.5)
    with pytest.raises(InputError, match="keep_rate 0.5.*--keep-rate all"):
        evaluate_checkpoint_volumes(tiny_checkpoint(), slab, ["volume3d"], "test", "cpu")
    res = evaluate_checkpoint_volumes(tiny_checkpoint(), slab, ["slice2d", "volume3d"], "test", "cpu")
    assert "keep_rate 0.5" in res["refused"]["volume3d"] and "volume3d_dice" not in res["metrics"]
    assert "slice2d_dice" in res["metrics"]
    cfg = ModelConfig(name="unet", size="compact")
    torch.save({"network": build_model(cfg).state_dict(), "config": {"model": cfg.model_dump()}}, tmp_path / "u.pt")
    with pytest.raises(InputError, match="applies to a SAM-Mix checkpoint; this one is 'unet'"):
        evaluate_checkpoint_volumes(tmp_path / "u.pt", slab, ["volume3d"], "test", "cpu", prompt_mode="volume")
    full, _ = case_store(tmp_path, "all")
    res = evaluate_checkpoint_volumes(tmp_path / "u.pt", full, ["volume3d"], "test", "cpu")
    assert res["volume3d_prompt_mode"] is None and res["volume3d_cases"][0]["case_id"] == "5"


def test_a_case_with_missing_slices_is_not_a_volume(tmp_path):
    from sam_mix_monai.data.h5store import CaseSlices, SliceStoreWriter

    path = tmp_path / "gap.h5"
    with SliceStoreWriter(path, 16) as w:
        n = 3
        w.append(CaseSlices("c", "synthetic", np.zeros((n, 16, 16), np.float32), np.zeros((n, 16, 16), np.uint8),
                            np.zeros(n, np.uint8), np.array([0, 1, 3]), np.array([1.0, 1.0, 2.0], np.float32),
                            np.eye(4), (16, 16, 4)), split="test")
    with pytest.raises(InputError, match="case c: its slices are not consecutive"):
        list(store_cases(path, "test"))


def test_prompt_switches_reach_the_volume_path(store):
    res = evaluate_checkpoint_volumes(tiny_checkpoint(), store[0], ["volume3d"], "test", "cpu",
                                      prompt_overrides={"cls_threshold": 1.0})  # no slice passes the gate
    assert res["model"]["cls_threshold"] == 1.0 and res["volume3d_prompt_mode"] == "volume"
    assert [r["pred_voxels"] for r in res["volume3d_cases"]] == [0, 0] and res["metrics"]["volume3d_dice"] == 0.0
