import numpy as np

from sam_mix_monai.utils.preview import save_overlay_grid


def test_overlay_grid_writes_a_png_with_contours(tmp_path):
    img = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    m = np.zeros((64, 64), np.uint8)
    m[20:40, 20:40] = 1
    p = save_overlay_grid([img, img, img], tmp_path / "g.png", masks=[m, None, m], preds=[None, m, m], titles=["a", "b", "c"])
    assert p.read_bytes()[:4] == b"\x89PNG"
    import matplotlib.image as mpimg

    rgb = mpimg.imread(p)[..., :3]
    green = (rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3)
    assert green.sum() > 50 and red.sum() > 50  # both contour colours are drawn
