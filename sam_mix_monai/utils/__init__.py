"""Small shared helpers: user-facing errors and atomic file output."""

from sam_mix_monai.utils.errors import InputError
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir

__all__ = ["InputError", "atomic_output", "check_writable_dir"]
