"""Classic 2-D optimization test functions, written in torch so autograd gives their gradients.

Each function knows its known minima (all global ones; the saddle has none, only its critical
point), the box it is drawn in and a standard start point away from the minimum. References:
Rosenbrock (1960), Beale (1958), Booth, Himmelblau (1972), Rastrigin (1974), and the
Jamil & Yang (2013) survey of test functions for the values and domains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Point = tuple[float, float]


@dataclass(frozen=True)
class TestFunction:
    __test__ = False  # not a pytest test class
    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(x, y), elementwise on tensors
    minima: tuple[Point, ...]  # every global minimum (empty: none)
    min_value: float | None  # f at the minima
    start: Point
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    description: str
    critical_points: tuple[Point, ...] = field(default=())  # drawn too (the saddle's saddle point)
    log_levels: bool = True  # contour levels spaced in log(f - f_min)

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        return self.f(xy[..., 0], xy[..., 1])

    def nearest_minimum(self, point: Point) -> tuple[Point | None, float]:
        """(the closest known minimum, its Euclidean distance); (None, nan) without minima."""
        if not self.minima:
            return None, math.nan
        best = min(self.minima, key=lambda m: math.dist(m, point))
        return best, math.dist(best, point)


def rosenbrock(x, y, a: float = 1.0, b: float = 100.0):
    return (a - x) ** 2 + b * (y - x**2) ** 2


def beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def booth(x, y):
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def himmelblau(x, y):
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def rastrigin(x, y, a: float = 10.0):
    return 2 * a + x**2 - a * torch.cos(2 * math.pi * x) + y**2 - a * torch.cos(2 * math.pi * y)


QUADRATIC_CONDITION = 50.0
QUADRATIC_ANGLE = math.pi / 6  # rotated, so a per-coordinate preconditioner cannot undo the conditioning


def ill_conditioned_quadratic(x, y):
    """0.5 (u^2 + kappa v^2) in coordinates (u, v) rotated by 30 degrees; kappa = 50."""
    c, s = math.cos(QUADRATIC_ANGLE), math.sin(QUADRATIC_ANGLE)
    u, v = c * x + s * y, -s * x + c * y
    return 0.5 * (u**2 + QUADRATIC_CONDITION * v**2)


def saddle(x, y):
    return x**2 - y**2


FUNCTIONS: dict[str, TestFunction] = {
    fn.name: fn
    for fn in (
        TestFunction(
            "rosenbrock",
            rosenbrock,
            ((1.0, 1.0),),
            0.0,
            (-1.5, 2.0),
            (-2.0, 2.0),
            (-1.0, 3.0),
            "(1-x)^2 + 100 (y-x^2)^2: a curved, flat-bottomed valley; minimum f(1, 1) = 0",
        ),
        TestFunction(
            "beale",
            beale,
            ((3.0, 0.5),),
            0.0,
            (1.0, 1.5),
            (-4.5, 4.5),
            (-4.5, 4.5),
            "sharp ridges at the corners, flat plateaus; minimum f(3, 0.5) = 0",
        ),
        TestFunction(
            "booth",
            booth,
            ((1.0, 3.0),),
            0.0,
            (-6.0, -6.0),
            (-10.0, 10.0),
            (-10.0, 10.0),
            "(x+2y-7)^2 + (2x+y-5)^2: a plain quadratic bowl; minimum f(1, 3) = 0",
        ),
        TestFunction(
            "himmelblau",
            himmelblau,
            ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
            0.0,
            (-0.5, -0.5),
            (-5.0, 5.0),
            (-5.0, 5.0),
            "four global minima with f = 0; which one an optimizer finds depends on its path",
        ),
        TestFunction(
            "rastrigin",
            rastrigin,
            ((0.0, 0.0),),
            0.0,
            (2.3, -1.7),
            (-5.12, 5.12),
            (-5.12, 5.12),
            "a bowl covered in local minima; global minimum f(0, 0) = 0",
            log_levels=False,
        ),
        TestFunction(
            "quadratic",
            ill_conditioned_quadratic,
            ((0.0, 0.0),),
            0.0,
            (-2.5, 1.5),
            (-3.0, 3.0),
            (-3.0, 3.0),
            f"rotated quadratic with condition number {QUADRATIC_CONDITION:g}; minimum f(0, 0) = 0",
        ),
        TestFunction(
            "saddle",
            saddle,
            (),
            None,
            (-2.0, 0.01),
            (-2.5, 2.5),
            (-2.5, 2.5),
            "x^2 - y^2: a saddle at (0, 0), unbounded below; shows who escapes and how fast",
            critical_points=((0.0, 0.0),),
            log_levels=False,
        ),
    )
}
