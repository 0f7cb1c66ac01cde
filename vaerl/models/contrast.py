"""A contrastive term beside the ELBO: the latent of a frame must say where things are.

The reconstruction of a VAE whose foreground cells draw the ball back does not need the ball's place from
the Gaussian part, so nothing in the ELBO puts it there, and the trained Gaussian part carries less than a
random-init encoder's (BENCHMARKS.md). The global-local term of Deep InfoMax and ST-DIM (Hjelm et al. 2019;
Anand et al. 2019, "Unsupervised State Representation Learning in Atari") does: from the latent of frame
``t``, pick out the encoder's local features of frame ``t + k`` (``k = 0``: the frame itself) at each place
of a feature map among those of the other frames of the batch at the same place (InfoNCE, van den Oord et
al. 2018). Most places look alike in all frames (background, bricks); where they differ is where the ball
and the paddles are, so the latent wins by knowing where those are. Unlike ST-DIM, each place has its own
predictor (a linear map from the latent to a whole feature map): the latent can then say *which* place holds
the ball, not only that one does.

Both sides are standardised over the batch, since what tells frames apart is a few pixels. Two choices keep
that honest:

* The partner's features are a target the term does not train: with gradients through them, dividing by the
  tiny spread of Breakout's features across frames made pretraining diverge within 100 steps.
* The latent's spread counts only down to a floor, and the predictor's rows have unit length, so nothing can
  scale a flat latent back up. Without them Pong's collapsed Gaussian means learned the paddles at a spread of
  0.002: a linear probe (which standardises) read them, agents (whose readings divide by at least 0.1,
  ``agents.rl.features.StandardizedLatents``) would not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalLocalContrast(nn.Module):
    """InfoNCE between latents ``(B, D)`` and feature maps ``(B, C, H, W)`` of their partner frames (a target:
    no gradient reaches them).

    With ``z`` the latents and ``f`` the maps standardised over the batch (``z`` by a spread of at least
    ``latent_floor``), the score of latent ``i`` against frame ``j`` at place ``p`` is ``<W_p z_i + b_p, f_j[:, p]>``
    with unit rows of ``W``. Each place is one ``B``-way classification of the partner among the batch, and the
    loss is the mean cross-entropy over places and latents (``log B`` nats for a latent that knows nothing).
    """

    def __init__(self, latent_dim: int, map_shape: tuple[int, int, int], latent_floor: float = 0.1) -> None:
        super().__init__()
        self.map_shape = tuple(map_shape)
        self.latent_floor = latent_floor
        channels, height, width = self.map_shape
        self.predict = nn.Linear(latent_dim, channels * height * width)

    def forward(self, latents: torch.Tensor, partner_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss in nats and the fraction of (place, latent) pairs whose partner scores highest."""
        if partner_maps.shape[1:] != self.map_shape:
            raise ValueError(f"feature maps of shape {tuple(partner_maps.shape[1:])} do not fit a contrast over "
                             f"{self.map_shape}")
        batch = len(latents)
        weight = F.normalize(self.predict.weight, dim=1)  # unit rows: no making up for a flat latent
        anchors = standardise(latents, floor=self.latent_floor)
        predicted = F.linear(anchors, weight, self.predict.bias).view(batch, self.map_shape[0], -1)  # (B, C, P)
        # scores[p, i, j]: latent i against frame j at place p
        scores = torch.einsum("icp,jcp->pij", predicted, standardise(partner_maps.flatten(2).detach()))
        targets = torch.arange(batch, device=latents.device).repeat(scores.shape[0])
        flat = scores.reshape(-1, batch)
        loss = F.cross_entropy(flat, targets)
        accuracy = (flat.argmax(1) == targets).float().mean()
        return loss, accuracy.detach()


def standardise(values: torch.Tensor, eps: float = 1e-5, floor: float = 0.0) -> torch.Tensor:
    """Each number minus its mean over the batch (the first axis), over its spread (at least ``floor``); numbers
    alike in every frame of the batch become 0."""
    centred = values - values.mean(0, keepdim=True)
    return centred / (centred.pow(2).mean(0, keepdim=True).sqrt().clamp(min=floor) + eps)


__all__ = ["GlobalLocalContrast", "standardise"]
