"""One evaluation report per encoder: reconstructions, samples, traversals, a video, probes, metrics.json.

    python scripts/evaluate_encoder.py encoder=runs/pretrain/Breakout/vqvae/seed0
    python scripts/evaluate_encoder.py env=Pong kind=vae probe=quick
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from vaerl.cli import parse_config, run_main
from vaerl.evaluation.config import EvaluateRunConfig
from vaerl.evaluation.runs import run_evaluation


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate_encoder")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    run_main(lambda: run_evaluation(parse_config(EvaluateRunConfig, raw)))


if __name__ == "__main__":
    main()
