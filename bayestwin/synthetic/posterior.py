"""A twin posterior centred on a synthetic ground truth, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from bayestwin.core.posterior import FeatureEncoder, TwinPosterior
from bayestwin.synthetic.truth import GroundTruth

__all__ = ["truth_posterior"]


def truth_posterior(
    truth: GroundTruth,
    brand: str,
    *,
    n_draws: int = 1000,
    effect_sd: float = 0.0,
    random_seed: int | None = 0,
) -> TwinPosterior:
    """A "posterior" whose draws are the true parameters of one brand; nothing is fitted.

    Every draw equals the true parameters, except the effects ``tau``, which get
    independent normal noise of sd ``effect_sd`` per draw (0: a point mass at the
    truth).

    Parameters
    ----------
    truth : GroundTruth
        From :func:`bayestwin.synthetic.generate_synthetic_twin_data`.
    brand : str
        Which brand's parameters to use.
    n_draws : int
        Number of draws ``D``.
    effect_sd : float
        Spread of the ``tau`` draws around the truth.
    random_seed : int, optional
        Seed of that spread.

    Returns
    -------
    TwinPosterior
        On the truth's own feature encoding (location and scale of the generator).
    """
    if not isinstance(truth, GroundTruth):
        raise TypeError("truth must be a bayestwin.synthetic.GroundTruth")
    bt = truth.brands[brand]
    rng = np.random.default_rng(random_seed)
    encoder = FeatureEncoder(
        numeric=truth.numeric_features,
        loc=truth.numeric_loc,
        scale=truth.numeric_scale,
        categorical=dict(truth.categorical_features),
        segments=truth.segments,
    )
    beta = np.concatenate([bt.beta, *(bt.cat_effects[c][1:] for c in truth.categorical_features)])
    pn = len(truth.numeric_features)
    gamma = np.zeros((len(truth.intervention_types), pn))
    gamma[:, : truth.n_interacting] = bt.gamma
    tau = bt.tau[None] + effect_sd * rng.standard_normal((n_draws, *bt.tau.shape))
    disp = None
    if truth.dispersion is not None:
        disp = np.full(n_draws, float(truth.dispersion))
    return TwinPosterior(
        family=truth.family,
        encoder=encoder,
        intervention_types=truth.intervention_types,
        intercept=np.tile(bt.intercept, (n_draws, 1)),
        beta=np.tile(beta, (n_draws, 1)),
        tau=tau,
        gamma=np.tile(gamma, (n_draws, 1, 1)),
        dose_rate=np.full(n_draws, truth.dose_rate),
        dispersion=disp,
        outcome_loc=0.0,
        outcome_scale=truth.outcome_scale,
    )
