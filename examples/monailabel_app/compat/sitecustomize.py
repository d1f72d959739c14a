"""Lets MONAI Label 0.8.5 start beside pydicom 3 (put this folder on PYTHONPATH for `monailabel start_server`).

MONAI Label imports pydicom-seg 0.4.1 at start-up (monailabel.datastore.utils.convert), and pydicom-seg imports
``pydicom._storage_sopclass_uids``, a module pydicom 3 removed; its UIDs (``SegmentationStorage``, ...) now live in
``pydicom.uid``. This alias is the only change: the local-folder datastore and bundle inference used here do not go
through pydicom-seg; MONAI Label's DICOM-SEG conversion (DICOMweb datastores) is untested with it.
"""

import sys

try:
    import pydicom._storage_sopclass_uids  # noqa: F401  (pydicom < 3)
except ImportError:
    try:
        import pydicom.uid
    except ImportError:  # no pydicom at all: nothing to alias
        pass
    else:
        sys.modules["pydicom._storage_sopclass_uids"] = pydicom.uid
