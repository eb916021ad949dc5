"""The TD-MPC2 family: an implicit latent world model planned with MPPI (Hansen et al. 2024)."""

from reverie.agents.tdmpc2.agent import TDMPC2Agent

__all__ = ["TDMPC2Agent"]
