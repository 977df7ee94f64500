"""Reinforcement-learning workloads.

    rl.pg    pg.py     REINFORCE (Williams 1992), the Pong-from-pixels recipe
    rl.trpo  trpo.py   TRPO (Schulman et al. 2015) with GAE (Schulman et al. 2016)
    rl.cem   cem.py    noisy cross-entropy method (Szita & Lőrincz 2006)
    rllib.X  rllib_baseline.py   RLlib's algorithm X, as a baseline

Shared pieces: policies.py (torsos, heads, observation normalization), rollout.py (workers
and the in-process pool; runyard.execute.rollout_pool has the Ray one), common.py (the
math every algorithm uses), workload.py (spec checks, setup, metrics, checkpoints),
atari.py (Pong preprocessing), visualize.py (artifacts).
"""
