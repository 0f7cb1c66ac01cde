"""One evaluation report per encoder: reconstructions, samples, traversals, a video, probes, metrics.json.

    python scripts/evaluate_encoder.py encoder=runs/pretrain/Breakout/vqvae/seed0
    python scripts/evaluate_encoder.py env=Pong kind=vae probe=quick
"""

import hydra
from omegaconf import DictConfig

from vaerl.cli import run_config
from vaerl.evaluation.config import EvaluateRunConfig
from vaerl.evaluation.runs import run_evaluation


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate_encoder")
def main(cfg: DictConfig) -> None:
    run_config(cfg, EvaluateRunConfig, run_evaluation)


if __name__ == "__main__":
    main()
