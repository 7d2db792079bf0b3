"""The benchmark references of Part VI: attention inside transformer blocks (``attncourse.blocks``).

Each class is the module's computation as its official code writes it; each ``@_reference``
builder takes the package's module, refuses settings the reference does not implement and copies
the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require

# --- vit ---
# --- end vit ---

# --- mobilevit ---
# --- end mobilevit ---

# --- fan ---
# --- end fan ---

# --- revit ---
# --- end revit ---

# --- muse ---
# --- end muse ---
