"""A MONAI Label app that serves one MONAI bundle folder as the model ``sam_mix_liver_ct`` (docs/bundle.md).

    monailabel start_server --app examples/monailabel_app --studies STUDIES \
        --conf bundle bundles/sam_mix_liver_ct --host 127.0.0.1 --port 8000

The bundle needs its weights in ``models/model.pt``. MONAI Label's ``BundleInferTask`` runs the bundle's
``configs/inference.yaml``: ``preprocessing`` (the package's volume reader), ``inferer`` (every axial slice through
SAM-Mix, mask back on the input's grid) and ``postprocessing`` (largest 3D component), the code `sam-mix infer
--bundle` runs.
"""

import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask

MODEL = "sam_mix_liver_ct"


class SamMixLiverApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        if "bundle" not in conf:
            raise ValueError("give the bundle folder: --conf bundle PATH")
        self.bundle = os.path.abspath(conf["bundle"])
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name=MODEL,
                         description="SAM-Mix liver segmentation in CT (MONAI bundle)", version="1.0")

    def init_infers(self):
        task = BundleInferTask(self.bundle, self.conf)
        if not task.is_valid():  # MONAI Label only logs a warning; an app without its model should not start
            raise ValueError(f"{self.bundle}: not a servable bundle (configs/inference.yaml and models/model.pt)")
        return {MODEL: task}
