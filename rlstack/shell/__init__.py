"""The shell: ``Algorithm`` and ``Trainer``, which hold the train state, and what they are made of
(building, evaluation, serialisation, members, stop conditions, presets, rlstack 1.x schedulers).
"""
