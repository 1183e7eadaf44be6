"""Notation and array aliases.

Dimension letters used in shape annotations throughout the package:
  b  batch            t  frames (time)       f  features (frequency bins or Mel bands)
  z  latent size      h  recurrent state      g  SRNN backward state
Inside models arrays are time-major (t, b, ...) because ``scan`` runs over the leading axis;
the public API takes and returns batch-major (b, t, ...) arrays.
"""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a Flax variables pytree
Metrics = dict[str, Array]
