"""Synthetic twin histories with known ground truth.

:func:`~bayestwin.synthetic.generate.generate_synthetic_twin_data` draws a panel history
for one twin type from the same hierarchical GLM the twin model fits, and returns it with
its :class:`~bayestwin.synthetic.truth.GroundTruth`: the data-generating process, which
computes the true expected outcome of any unit under any intervention, the true ATE of
any intervention on any set of units, and runs "real" randomised experiments.

Panel options, off by default (:mod:`~bayestwin.synthetic.panel`): unit random
intercepts at a chosen ICC, staggered or on/off adoption, trend and seasonality,
adoption timing that follows the hidden unit level, a threshold in the effect and
Student-t noise. The truth's ATE then includes each twin's own unit effect and is
evaluated at a stated period, by default the one right after the history.

Layout: :mod:`~bayestwin.synthetic.catalog` (names, scales and defaults per twin type),
:mod:`~bayestwin.synthetic.truth` (the ground truth), :mod:`~bayestwin.synthetic.generate`
(the draw; the history's columns), :mod:`~bayestwin.synthetic.panel` (the panel
options), :mod:`~bayestwin.synthetic.posterior` (a posterior
centred on the truth, for tests and benchmarks) and :mod:`~bayestwin.synthetic.cli`
(``python -m bayestwin.synthetic``).

Import rule: this package imports only :mod:`bayestwin.core` and the shared kernel
(:mod:`bayestwin.vocabulary`); nothing above (model, engine, store, service, faces).
"""

from __future__ import annotations

from bayestwin.synthetic.catalog import DEFAULT_FAMILY
from bayestwin.synthetic.cli import main
from bayestwin.synthetic.generate import generate_synthetic_twin_data
from bayestwin.synthetic.panel import PanelOptions
from bayestwin.synthetic.posterior import truth_posterior
from bayestwin.synthetic.truth import (
    BrandTruth,
    GroundTruth,
    SyntheticTwinData,
    TrueEffect,
    dose_response,
)

__all__ = [
    "DEFAULT_FAMILY",
    "BrandTruth",
    "GroundTruth",
    "PanelOptions",
    "SyntheticTwinData",
    "TrueEffect",
    "dose_response",
    "generate_synthetic_twin_data",
    "main",
    "truth_posterior",
]
