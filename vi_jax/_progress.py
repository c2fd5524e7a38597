"""The progress bar class used by training and evaluation.

`tqdm.auto` picks the notebook widget bar inside Jupyter, but where `ipywidgets` is not
installed it warns "IProgress not found" on import (the first output of every notebook)
and falls back to the text bar anyway. Choosing the text bar ourselves in that case
gives the same bar without the warning.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
