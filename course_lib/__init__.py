"""course_lib: the helper library behind the mechanistic-interpretability course notebooks.

One concept per module: ``runtime`` (profiles, seeds, device, cache), ``corpus`` (text, BPE,
batches), ``lm`` (real LMs offline), ``weight_sparsity`` (top-k projection), and one module or
package per notebook topic. Import the modules you need: ``from course_lib import runtime``.
"""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("COURSE_LIB_HEADLESS", "") == "1":  # unattended run: text progress bars, no widgets
    from course_lib.progress import install_headless_tqdm as _install

    _install()
