"""SAM-Mix on MONAI: few-label liver segmentation in abdominal CT.

The package tree follows the data flow, and no module imports back up the chain::

    utils -> transforms -> data -> networks -> engines -> inference / bundle -> cli

The Python API (loaded on first use)::

    import sam_mix_monai
    mask = sam_mix_monai.segment("scan.nii.gz", checkpoint="best.pt")   # a nibabel.Nifti1Image
    seg = sam_mix_monai.Segmenter("best.pt", device="cuda:0")           # load once, segment many
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Segmenter", "segment", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import sam_mix_monai`` (and the CLI's start) must not pay for torch and MONAI.
    if name in ("Segmenter", "segment"):
        from sam_mix_monai.inference import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'sam_mix_monai' has no attribute {name!r}")
