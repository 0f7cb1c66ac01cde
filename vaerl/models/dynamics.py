"""An inverse-dynamics term beside the ELBO: the latents of two consecutive frames must say which action was taken.

The agent's own paddle is the one object whose motion the action decides. A VAE whose foreground cells draw the
paddle back leaves it out of the Gaussian part (BENCHMARKS.md: the trained part reads Breakout's paddle at 0.05,
a random-init trunk's at 0.56); object dropout and a contrastive term bring it to about 0.4 at most. Predicting the
action between frames ``t`` and ``t + 1`` from their latents does (the inverse model of Pathak et al. 2017,
"Curiosity-driven Exploration by Self-supervised Prediction", and of Agrawal et al. 2016): only the change in
what the agent controls tells the actions apart.

The predictor is linear with unit rows, over the two latents standardised together over the batch with a floor
on the spread, as :class:`~vaerl.models.contrast.GlobalLocalContrast` reads its latent: a linear map cannot
make a place up that the latent does not say linearly, and with unit rows and the floor nothing can scale a flat
latent back up, so what the term teaches is what linear probes and agents' standardised readings see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaerl.models.contrast import standardise


class InverseDynamics(nn.Module):
    """Cross-entropy of the action taken between two frames, predicted from their latents ``(B, D)`` each.

    The score of action ``a`` is ``<w_a, [z_t, z_next]> + b_a`` with unit rows ``w_a``, where both latents are
    standardised with one mean and spread per number (over the ``2B`` latents, the spread counted down to
    ``latent_floor``), so the difference of the two halves is a difference of places.
    """

    def __init__(self, latent_dim: int, num_actions: int, latent_floor: float = 0.1) -> None:
        super().__init__()
        self.num_actions, self.latent_floor = num_actions, latent_floor
        self.predict = nn.Linear(2 * latent_dim, num_actions)

    def logits(self, latents: torch.Tensor, next_latents: torch.Tensor) -> torch.Tensor:
        """Action scores ``(B, num_actions)`` of the steps from ``latents`` to ``next_latents``."""
        both = standardise(torch.cat([latents, next_latents]), floor=self.latent_floor)
        pairs = torch.cat(both.chunk(2), dim=1)  # (B, 2D): [z_t, z_next]
        return F.linear(pairs, F.normalize(self.predict.weight, dim=1), self.predict.bias)

    def forward(self, latents: torch.Tensor, next_latents: torch.Tensor,
                actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss in nats and the fraction of steps whose action scores highest (``actions`` in
        ``[0, num_actions)``: pretraining checks the dataset's once, not every step)."""
        actions = actions.long().view(-1)
        if len(actions) != len(latents) or latents.shape != next_latents.shape:
            raise ValueError(f"{len(actions)} actions for steps between {tuple(latents.shape)} and "
                             f"{tuple(next_latents.shape)} latents: give one action per pair of frames")
        logits = self.logits(latents, next_latents)
        loss = F.cross_entropy(logits, actions)
        accuracy = (logits.argmax(1) == actions).float().mean()
        return loss, accuracy.detach()


__all__ = ["InverseDynamics"]
