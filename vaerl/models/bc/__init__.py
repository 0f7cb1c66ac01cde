"""The behaviour-cloning network family: CVAE-BC and its regression and mixture-density baselines.

Each network maps observations to the parameters of a chunk of actions through the same pieces:

* :mod:`~vaerl.models.bc.observations`: vectors, vaerl latents or images -> features;
* :mod:`~vaerl.models.bc.heads`: features -> categorical, Gaussian or point (regression) actions;
* :mod:`~vaerl.models.bc.cvae`: the conditional VAE (multimodal, commits to one mode per episode);
* :mod:`~vaerl.models.bc.regression`: no latent (regression BC, BC by cross-entropy);
* :mod:`~vaerl.models.bc.mdn`: the regression network with a mixture-of-Gaussians head.

All of them follow :class:`~vaerl.models.bc.base.BCNetwork`; policies that act with them live in
``agents.bc``.
"""

from vaerl.models.bc.base import BCNetwork, PolicyLoss
from vaerl.models.bc.cvae import CVAE, PRIORS, CVAEConfig, CVAEOutput, Prior, gaussian_kl_between
from vaerl.models.bc.heads import (
    ACTION_HEADS,
    ActionHead,
    CategoricalHead,
    GaussianHead,
    MeanHead,
    make_action_head,
)
from vaerl.models.bc.mdn import MixtureHead, mdn_network
from vaerl.models.bc.observations import ObservationEncoder
from vaerl.models.bc.regression import RegressionNet

__all__ = [
    "ACTION_HEADS", "CVAE", "PRIORS", "ActionHead", "BCNetwork", "CVAEConfig", "CVAEOutput", "CategoricalHead",
    "GaussianHead", "MeanHead", "MixtureHead", "ObservationEncoder", "PolicyLoss", "Prior", "RegressionNet",
    "gaussian_kl_between", "make_action_head", "mdn_network",
]
