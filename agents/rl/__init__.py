"""Stable-Baselines3 agents on vaerl latents, with the pixel baseline they are compared against."""

from agents.rl.config import AgentConfig, EncoderOptions, EvalConfig, TrainAgentConfig, VideoConfig
from agents.rl.features import EncoderFeatures
from agents.rl.play import LoadedAgent, load_agent, play
from agents.rl.train import train_agent

__all__ = ["AgentConfig", "EncoderFeatures", "EncoderOptions", "EvalConfig", "LoadedAgent", "TrainAgentConfig",
           "VideoConfig", "load_agent", "play", "train_agent"]
