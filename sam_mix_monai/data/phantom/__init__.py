"""Synthetic abdominal CT phantoms with liver and lesion labels.

Generates CT volumes that look like contrast-enhanced abdominal CT (body wall, spine,
ribs, lungs, heart, liver with vessels and hypodense lesions, spleen, kidneys, stomach,
bowel, pancreas, great vessels) in two acquisition domains, and writes them exactly in
the LiTS or TotalSegmentator layout.

Modules: :mod:`.tissues` (tissue ids), :mod:`.domains` (domain a/b), :mod:`.patient`
(per-case parameters), :mod:`.geometry` (canvas and primitives), :mod:`.body`,
:mod:`.thorax`, :mod:`.vessels`, :mod:`.liver`, :mod:`.organs` (anatomy),
:mod:`.texture` (HU, noise, blur), :mod:`.volume` (one case), :mod:`.writer`
(layouts), :mod:`.cohort` (many cases in parallel).
"""

from sam_mix_monai.data.phantom.cohort import MANIFEST, default_workers, generate_cohort
from sam_mix_monai.data.phantom.domains import DOMAINS, DomainSpec, get_domain
from sam_mix_monai.data.phantom.patient import ORIENTATIONS, Patient
from sam_mix_monai.data.phantom.tissues import LESION_TISSUES, LIVER_TISSUES, Tissue
from sam_mix_monai.data.phantom.volume import PhantomCase, case_seed, generate_case
from sam_mix_monai.data.phantom.writer import LAYOUTS, case_paths, write_case

__all__ = [
    "DOMAINS",
    "LAYOUTS",
    "LESION_TISSUES",
    "LIVER_TISSUES",
    "MANIFEST",
    "ORIENTATIONS",
    "DomainSpec",
    "Patient",
    "PhantomCase",
    "Tissue",
    "case_paths",
    "case_seed",
    "default_workers",
    "generate_case",
    "generate_cohort",
    "get_domain",
    "write_case",
]
