"""course_lib: the helper library behind the mechanistic-interpretability course notebooks.

Shared infrastructure at the top (``runtime``, ``cache``, ``corpus``, ``lm``, ``hooks``,
``weight_sparsity``, ``explorer``, ``progress``), then one package per lesson: ``lens`` (00), ``toy``
(01), ``circuits`` (02), ``sae`` (03), ``autointerp`` (04). Import what you need:
``from course_lib import runtime, sae``.
"""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("COURSE_LIB_HEADLESS", "") == "1":  # unattended run: text progress bars, no widgets
    from course_lib.progress import install_headless_tqdm as _install

    _install()
