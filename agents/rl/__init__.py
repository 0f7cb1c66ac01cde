"""Stable-Baselines3 agents on vaerl latents, with the pixel baseline they are compared against."""

from agents.rl.config import AgentConfig, EncoderOptions, EvalConfig, TrainAgentConfig, VideoConfig
from agents.rl.evaluate import EvaluateAgentConfig, evaluate_agent
from agents.rl.features import EncoderFeatures
from agents.rl.play import LoadedAgent, load_agent, play
from agents.rl.train import train_agent

__all__ = ["AgentConfig", "EncoderFeatures", "EncoderOptions", "EvalConfig", "EvaluateAgentConfig", "LoadedAgent",
           "TrainAgentConfig", "VideoConfig", "evaluate_agent", "load_agent", "play", "train_agent"]
