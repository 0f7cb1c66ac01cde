"""Evaluating encoders before spending hours of RL on them: linear probes, pictures, videos, a code prior.

* :func:`probe_encoder` – AtariARI-style linear probes of RAM variables, with baselines
* :func:`evaluate_encoder` – one report folder per encoder (``scripts/evaluate_encoder.py``)
* :func:`latent_traversal`, :func:`interpolate`, :func:`reconstruction_video` – looking at latents
* :func:`fit_prior` – a PixelCNN prior over VQ-VAE code grids (:mod:`vaerl.models.pixelcnn`)
"""

from vaerl.data.episodes import split_episodes
from vaerl.evaluation.annotations import GameAnnotation, find_annotation, load_annotations
from vaerl.evaluation.prior import PriorSettings, fit_prior, sample_frames
from vaerl.evaluation.probes import ProbeReport, ProbeSettings, fit_linear_probes, probe_encoder, weighted_f1
from vaerl.evaluation.report import ReportSettings, evaluate_encoder, summary
from vaerl.evaluation.traversals import interpolate, latent_traversal
from vaerl.evaluation.video import reconstruction_video, write_video

__all__ = ["GameAnnotation", "PriorSettings", "ProbeReport", "ProbeSettings", "ReportSettings", "evaluate_encoder",
           "find_annotation", "fit_linear_probes", "fit_prior", "interpolate", "latent_traversal", "load_annotations",
           "probe_encoder", "reconstruction_video", "sample_frames", "split_episodes", "summary", "weighted_f1",
           "write_video"]
