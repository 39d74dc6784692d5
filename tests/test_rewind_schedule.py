import math

import pytest

from prac_plugin import PracError, RewindPoint
from prac_plugin.engine.schedule import lr_factor
from prac_plugin.tickets.rewind import resolve_rewind_step


@pytest.mark.parametrize(
    "text, epochs, iterations, step",
    [("0it", 0, 0, 0), ("500it", 0, 500, 500), ("2ep", 2, 0, 782), ("1ep50it", 1, 50, 441), ("0ep", 0, 0, 0)],
)
def test_rewind_point_parsing(text, epochs, iterations, step):
    point = RewindPoint.parse(text)
    assert (point.epochs, point.iterations) == (epochs, iterations)
    assert point.to_step(391) == step
    assert RewindPoint.parse(str(point)) == point


@pytest.mark.parametrize("bad", ["", "2", "ep", "it", "1.5ep", "2it1ep", "-1it", "2 ep", "twoep"])
def test_bad_rewind_points_are_errors(bad):
    with pytest.raises(PracError, match="rewind point"):
        RewindPoint.parse(bad)


def test_rewind_beyond_training_is_an_error():
    assert resolve_rewind_step(RewindPoint.parse("2ep"), 10, 30) == 20
    with pytest.raises(PracError, match="beyond the training length of 30 steps"):
        resolve_rewind_step(RewindPoint.parse("3ep"), 10, 30)


def test_step_schedule_milestones_in_epochs():
    factors = [lr_factor(s, 100, 10, "step", [3, 6], 0.1) for s in (0, 29, 30, 59, 60, 99)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_then_cosine():
    assert lr_factor(0, 110, 10, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 110, 10, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(60, 110, 10, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(110, 110, 10, "cosine", warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(35, 110, 10, "cosine", warmup_steps=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_schedule_is_a_function_of_the_step_only():
    # resuming at step k gives the rate of step k: the property rewinding depends on
    assert [lr_factor(k, 400, 40, "step", [5], 0.1) for k in (199, 200)] == pytest.approx([1.0, 0.1])
