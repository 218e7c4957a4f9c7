"""The learning layer: the rollout, the PPO loss and update, their stats, the train state, and the
transforms applied from outside (``over_members``, ``compiled``, CUDA graphs). Below the shell:
no MLflow, no files, no host sync.
"""
