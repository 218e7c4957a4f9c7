"""Videos of a policy: deterministic episodes on one env, written as MP4 (or
GIF, by the file's suffix) and logged to MLflow by ``Trainer.eval(video=)``
and ``rlstack eval CKPT --video PATH``.

The frames come from the env: the built-in classic-control envs draw
themselves from their state (``render_frame``, :mod:`rlstack.envs.drawing`,
no OpenGL); gymnasium envs render through ``render_mode="rgb_array"``
(MuJoCo's through its offscreen renderer, on EGL or OSMesa: one is chosen
where ``MUJOCO_GL`` is unset, and a machine with neither gets a one-line
error naming what to install). Writing needs the ``video`` extra
(``imageio`` with ``imageio-ffmpeg``).
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import random
from ..envs.checks import make_env
from .gymnasium_adapter import actions_to_numpy

EXTRA_HINT = (
    "videos need imageio with its ffmpeg plugin: pip install 'rlstack[video]' "
    "(or pip install imageio imageio-ffmpeg)."
)
#: Frames per second of a written video (gymnasium's classic-control rate).
FPS = 30


def record_video(
    path: str | os.PathLike,
    env_spec: Any,
    act: Callable[[Any], Any],
    *,
    episodes: int = 1,
    config: Any = None,
    seed: int = 0,
    fps: int = FPS,
) -> dict[str, Any]:
    """Write ``episodes`` episodes of ``act(obs) -> actions`` (a batch of one) on
    one env of ``env_spec`` to ``path``.

    Returns:
        ``{"path", "frames", "episodes", "returns"}``: the file, its frame
        count (one per step, drawn before the step's action) and each
        episode's undiscounted return.

    Raises:
        ImportError: without imageio (the message names the extra).
        ValueError: for an env that draws no frames, or ``episodes`` < 1.
        RuntimeError: MuJoCo without an offscreen OpenGL backend (one line).
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"`episodes` must be a positive int, got {episodes!r}.")
    imageio = _imageio()
    frames, returns = [], []
    for episode in range(episodes):
        total = 0.0
        for frame, reward in _episode(env_spec, act, config, seed + episode):
            frames.append(frame)
            total += reward
        returns.append(total)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    return {"path": str(path), "frames": len(frames), "episodes": episodes, "returns": returns}


def _episode(env_spec: Any, act: Callable, config: Any, seed: int) -> Iterator[tuple]:
    """``(frame, reward)`` of each step of one episode."""
    if hasattr(env_spec, "env_id"):  # gymnasium:ID
        yield from _gymnasium_episode(env_spec, act, config, seed)
        return
    env = make_env(env_spec, num_envs=1)
    if not hasattr(env, "render_frame"):
        raise ValueError(
            f"{getattr(env_spec, '__name__', env_spec)!r} draws no frames: videos are drawn for "
            "the built-in classic-control envs and gymnasium envs."
        )
    reset_key, step_key = random.split(random.key(seed))
    state, obs = env.reset(reset_key, 1, config=config)
    for t in range(env.eval_steps):
        frame = env.render_frame(state, 0)
        with torch.no_grad():
            state, obs, reward, terminated, truncated = env.step(
                random.fold_in(step_key, t), state, act(obs)
            )
        yield frame, float(reward[0])
        if bool(terminated[0] | truncated[0]):
            return


def _gymnasium_episode(env_spec: Any, act: Callable, config: Any, seed: int) -> Iterator[tuple]:
    """One episode of gymnasium's own env, rendered as ``rgb_array``."""
    import gymnasium

    options = {**env_spec.make_kwargs, **dict(config or {})}
    env = gymnasium.make(env_spec.env_id, render_mode="rgb_array", **options)
    if "mujoco" in type(env.unwrapped).__module__:
        choose_mujoco_gl()
    try:
        obs, _ = env.reset(seed=seed)
        while True:
            frame = _render(env)
            action = act(torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None])
            obs, reward, terminated, truncated, _ = env.step(actions_to_numpy(action)[0])
            yield frame, float(reward)
            if terminated or truncated:
                return
    finally:
        env.close()


def _render(env: Any) -> np.ndarray:
    """``env.render()``, its failures in one line naming what is missing."""
    try:
        return np.asarray(env.render())
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "mujoco" in type(env.unwrapped).__module__:
            raise RuntimeError(
                f"MuJoCo could not render offscreen ({first}): install EGL (libegl1) or OSMesa "
                "(libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa."
            ) from None
        raise RuntimeError(f"{env.spec.id} could not render an rgb_array frame: {first}") from None


def choose_mujoco_gl() -> str:
    """``MUJOCO_GL`` for offscreen rendering: as set, else ``egl`` or ``osmesa``, whichever
    library is installed (set in the environment before MuJoCo's renderer starts).

    Raises:
        RuntimeError: neither is installed (one line naming both).
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return backend
    raise RuntimeError(
        "MuJoCo renders videos offscreen through EGL or OSMesa, and neither is installed: "
        "install libegl1 (or libosmesa6) and set MUJOCO_GL=egl (or osmesa)."
    )


def _imageio() -> Any:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401 - the MP4 writer
    except ImportError as e:
        raise ImportError(EXTRA_HINT) from e
    return imageio
