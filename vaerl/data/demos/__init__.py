"""Demonstrations for imitation: record (observation, action, reward, episode) from any policy, store them safely.

* :mod:`~vaerl.data.demos.spaces`: JSON descriptions of the env's spaces, kept with the data;
* :mod:`~vaerl.data.demos.file`: the ``.npz`` demo file (layout in its docstring);
* :mod:`~vaerl.data.demos.recording`: running an expert and keeping raw observations or encoder latents;
* :mod:`~vaerl.data.demos.minari`: the same episodes as a Minari dataset (needs ``pip install minari``).

Experts that are Stable-Baselines3 agents and the ``collect_demos`` entry point live in ``agents.bc``.
"""

from vaerl.data.demos.file import DemoMetadata, Demos, load_demos, save_demos, validate_demos
from vaerl.data.demos.minari import load_demo_source, load_minari, save_minari
from vaerl.data.demos.recording import (
    ENCODER_PREFIX,
    demo_encoder,
    encode_demos,
    encoder_digest,
    encoder_obs_transform,
    encoder_path,
    episode_info_keys,
    obs_transform_from_name,
    record_demos,
)
from vaerl.data.demos.spaces import describe_space, space_from_description, space_mismatch

__all__ = [
    "ENCODER_PREFIX", "DemoMetadata", "Demos", "demo_encoder", "describe_space", "encode_demos", "encoder_digest",
    "encoder_obs_transform", "encoder_path", "episode_info_keys", "load_demo_source", "load_demos", "load_minari",
    "obs_transform_from_name", "record_demos", "save_demos", "save_minari", "space_from_description",
    "space_mismatch", "validate_demos",
]
