"""vaerl: pretrained VAE / VQ-VAE encoders that turn pixel environments into latent environments."""

__version__ = "0.1.0"

from vaerl.encoder import Encoder, load_encoder
from vaerl.wrappers import wrap

__all__ = ["Encoder", "__version__", "load_encoder", "wrap"]
