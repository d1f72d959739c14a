"""Demo figures: valid PNGs of the expected layout, drawn content, and clear errors on bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from sam_mix_monai.experiments.figures import (
    PNG_SIGNATURE,
    dice_2d,
    save_cam_grid,
    save_prediction_comparison,
    save_training_comparison,
)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and IHDR chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _slices(n: int = 3, size: int = 48):
    rng = np.random.default_rng(0)
    images = [rng.random((size, size)).astype(np.float32) * 0.3 for _ in range(n)]
    truths = []
    for k in range(n):
        m = np.zeros((size, size), np.uint8)
        m[10 + k : 30, 12:34] = 1
        truths.append(m)
    return images, truths


def test_dice_2d():
    a = np.zeros((8, 8), np.uint8)
    b = a.copy()
    assert dice_2d(a, b) == 1.0  # both empty
    a[:4] = 1
    assert dice_2d(a, a) == 1.0
    assert dice_2d(a, b) == 0.0
    b[:2] = 1
    assert dice_2d(a, b) == pytest.approx(2 * 16 / (32 + 16))
    with pytest.raises(ValueError, match="shapes differ"):
        dice_2d(a, np.zeros((4, 4)))


def test_prediction_comparison_is_one_column_per_model(tmp_path):
    images, truths = _slices(3)
    preds = {"A": truths, "B": [np.zeros_like(t) for t in truths], "C": truths}
    out = save_prediction_comparison(images, truths, preds, tmp_path / "cmp.png", titles=["s0", "s1", "s2"])
    w, h = png_size(out)
    assert (w, h) == (900, 940)  # 3 columns x 3 rows of 3-inch panels at 100 dpi, plus the title band
    w2, h2 = png_size(save_prediction_comparison(images[:1], truths[:1], {"A": truths[:1]}, tmp_path / "one.png"))
    assert w2 == 300 and h2 < h / 2
    img = __import__("matplotlib.image", fromlist=["imread"]).imread(out)
    red = (img[..., 0] > 0.8) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    green = (img[..., 1] > 0.8) & (img[..., 0] < 0.3) & (img[..., 2] < 0.3)
    assert red[:, : w // 3].any() and green.any()  # model A's prediction contour, truth contours
    assert not red[:, w // 3 : 2 * w // 3].any()  # model B predicted nothing


def test_prediction_comparison_rejects_mismatched_input(tmp_path):
    images, truths = _slices(2)
    with pytest.raises(ValueError, match="1 predictions for 2 slices"):
        save_prediction_comparison(images, truths, {"A": truths[:1]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no model"):
        save_prediction_comparison(images, truths, {}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cam_grid_draws_heat_map_and_box(tmp_path):
    images = [np.zeros((64, 64), np.float32)] * 2
    cams = [np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32)]
    out = save_cam_grid(images, cams, [(10, 12, 40, 50), (0, 0, 63, 63)], tmp_path / "cam.png", titles=["a", "b"],
                        truths=[None, np.pad(np.ones((20, 20)), 22)], fallback=[False, True], ncols=2)
    w, _ = png_size(out)
    assert w == 600
    import matplotlib.image as mpimg

    img = mpimg.imread(out)[..., :3]
    yellow = (img[..., 0] > 0.8) & (img[..., 1] > 0.8) & (img[..., 2] < 0.3)
    assert yellow[:, : w // 2].sum() > 100  # the solid box of the first panel
    left, right = img[:, 20 : w // 2 - 20], img[:, w // 2 + 20 : -20]
    # CAM 0 is blue under jet, CAM 1 red: the heat map is really drawn
    assert left[..., 2].mean() > left[..., 0].mean() and right[..., 0].mean() > right[..., 2].mean()


def test_cam_grid_rejects_bad_input(tmp_path):
    img = [np.zeros((32, 32), np.float32)]
    with pytest.raises(ValueError, match="differ"):
        save_cam_grid(img, [np.zeros((16, 16))], [(0, 0, 5, 5)], tmp_path / "c.png")
    with pytest.raises(ValueError, match="1 images but 0 CAMs"):
        save_cam_grid(img, [], [], tmp_path / "c.png")


def test_training_comparison(tmp_path):
    hist = {
        "SAM-Mix-50": {"train": [{"epoch": e, "loss": 2.0 / e} for e in range(1, 6)],
                       "val": [{"epoch": e, "slice2d_dice": 0.5 + 0.05 * e} for e in range(1, 6)],
                       "best_val": {"epoch": 5, "slice2d_dice": 0.75}},
        "U-Net-50": {"train": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}], "val": []},
    }
    w, h = png_size(save_training_comparison(hist, tmp_path / "curves.png"))
    assert (w, h) == (990, 360)
    with pytest.raises(ValueError, match="no run histories"):
        save_training_comparison({}, tmp_path / "none.png")
