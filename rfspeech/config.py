"""Where the Hydra config tree (``recipes/``) lives, in a checkout and in an installed wheel."""

from __future__ import annotations

import os
from pathlib import Path


def recipes_dir() -> Path:
    """Return the directory of the Hydra config tree.

    Order: ``$RFSPEECH_RECIPES``; the ``recipes/`` of a source checkout (editable install);
    the copy packaged into the wheel as ``rfspeech/_recipes``.
    """
    env = os.environ.get("RFSPEECH_RECIPES")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    checkout = here.parent / "recipes"
    if checkout.is_dir():
        return checkout
    return here / "_recipes"
