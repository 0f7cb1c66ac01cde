"""Agents that act on vaerl latents or raw observations: SB3 agents and behaviour cloning."""
