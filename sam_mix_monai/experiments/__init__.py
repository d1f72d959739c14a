"""Experiments on top of training, evaluation and inference: the demo report and the comparison study.

``table`` renders results in the paper's format (mean ± sd over seeds), ``study`` runs the
model × labelled-slices × seed grid, ``demo`` runs the end-to-end phantom demo and writes its report.
"""
