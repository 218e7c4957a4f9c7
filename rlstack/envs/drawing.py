"""Frames of the built-in classic-control envs, drawn from their state with
NumPy alone (no OpenGL, no pygame): what a video of a policy shows.

A frame is ``[H, W, 3]`` uint8 RGB, :data:`HEIGHT` x :data:`WIDTH` pixels,
white ground; shapes are drawn in world coordinates through a
:class:`Canvas` that maps an ``x`` range and a ``y`` range onto the image
(``y`` up). Each env's ``render_frame(state, index)`` draws env ``index``
of a batched state with these.
"""

from __future__ import annotations

import math

import numpy as np

#: Frame size in pixels: multiples of 16, as video encoders want them.
HEIGHT, WIDTH = 240, 384
BLACK, GREY, BLUE = (0, 0, 0), (150, 150, 150), (70, 110, 200)
RED, BROWN = (200, 70, 60), (160, 110, 60)


class Canvas:
    """A white ``[HEIGHT, WIDTH, 3]`` image showing world ``x`` in ``x_range`` and ``y`` in
    ``y_range`` (same scale on both axes where the ranges are in the image's proportions).
    """

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.image = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
        self.x_range, self.y_range = x_range, y_range
        rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
        # The world coordinates of every pixel's centre.
        self.x = x_range[0] + (cols + 0.5) / WIDTH * (x_range[1] - x_range[0])
        self.y = y_range[1] - (rows + 0.5) / HEIGHT * (y_range[1] - y_range[0])
        self.pixel = (x_range[1] - x_range[0]) / WIDTH  # world units per pixel

    def segment(
        self,
        start: tuple[float, float],
        end: tuple[float, float],
        width: float,
        color: tuple[int, int, int],
    ) -> None:
        """A thick line from ``start`` to ``end`` (world units; ``width`` too), round ends."""
        (x0, y0), (x1, y1) = start, end
        dx, dy = x1 - x0, y1 - y0
        length2 = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((self.x - x0) * dx + (self.y - y0) * dy) / length2, 0.0, 1.0)
        distance = np.hypot(self.x - (x0 + t * dx), self.y - (y0 + t * dy))
        self.image[distance <= max(width / 2, self.pixel)] = color

    def box(
        self,
        centre: tuple[float, float],
        size: tuple[float, float],
        color: tuple[int, int, int],
    ) -> None:
        """An axis-aligned rectangle."""
        inside = (np.abs(self.x - centre[0]) <= size[0] / 2) & (
            np.abs(self.y - centre[1]) <= size[1] / 2
        )
        self.image[inside] = color

    def disc(self, centre: tuple[float, float], radius: float, color: tuple[int, int, int]) -> None:
        """A filled circle."""
        self.image[np.hypot(self.x - centre[0], self.y - centre[1]) <= radius] = color

    def curve(self, ys: np.ndarray, width: float, color: tuple[int, int, int]) -> None:
        """The graph ``y = ys[column]`` over the image's columns."""
        self.image[np.abs(self.y - ys[None, :]) <= width / 2] = color


def cartpole(x: float, theta: float, pole_length: float = 1.0) -> np.ndarray:
    """CartPole: the cart at ``x`` (m) on its track (the +-2.4 m bounds marked),
    the pole at ``theta`` (rad from upright, clockwise), ``pole_length`` m long.
    """
    canvas = Canvas((-3.6, 3.6), (-1.2, 3.3))
    canvas.segment((-3.6, 0.0), (3.6, 0.0), 0.02, BLACK)  # the track
    for bound in (-2.4, 2.4):
        canvas.segment((bound, -0.15), (bound, 0.15), 0.03, GREY)
    canvas.box((x, 0.0), (0.5, 0.3), BLACK)
    tip = (x + pole_length * math.sin(theta), pole_length * math.cos(theta))
    canvas.segment((x, 0.1), (tip[0], tip[1] + 0.1), 0.1, BROWN)
    canvas.disc((x, 0.1), 0.05, BLUE)
    return canvas.image


def pendulum(theta: float) -> np.ndarray:
    """Pendulum: the rod at ``theta`` (rad from upright, counter-clockwise), pivot at the
    centre.
    """
    canvas = Canvas((-1.76, 1.76), (-1.1, 1.1))
    tip = (-math.sin(theta), math.cos(theta))
    canvas.segment((0.0, 0.0), tip, 0.2, RED)
    canvas.disc((0.0, 0.0), 0.05, BLACK)
    return canvas.image


def mountain_car(position: float, goal: float = 0.5) -> np.ndarray:
    """MountainCar: the hill ``y = sin(3 x)`` over ``[-1.2, 0.6]``, the goal flag at
    ``goal``, the car at ``position``.
    """
    canvas = Canvas((-1.2, 0.6), (-0.6, 0.525))
    canvas.curve(0.45 * np.sin(3 * canvas.x[0]), 0.02, BLACK)
    flag = 0.45 * math.sin(3 * goal)
    canvas.segment((goal, flag), (goal, flag + 0.2), 0.015, BLACK)
    canvas.box((goal + 0.04, flag + 0.17), (0.08, 0.06), RED)
    canvas.disc((position, 0.45 * math.sin(3 * position) + 0.05), 0.05, BLUE)
    return canvas.image
