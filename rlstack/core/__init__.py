"""The core layer: records (``types``), keys (``random``), spaces, the config and its schedules,
normalisation, devices and the optimizer transforms. It imports no other layer.
"""
