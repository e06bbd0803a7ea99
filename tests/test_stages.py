"""The stages of a long job: numbered as planned, and the estimate of what is left follows the measured pace."""

from __future__ import annotations

import time

from clipface.eval.stages import Stages


def test_stages_are_numbered_and_the_estimate_follows_the_pace(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    lines: list[str] = []
    stages = Stages(lines.append)
    for label in ("a", "b", "c"):
        stages.plan(label, "cloaks", 60.0)
    stages.plan("m", "models", 30.0)
    assert stages.left() == 210.0
    with stages.run("a"):
        now[0] += 6.0  # ten times faster than guessed
    assert lines[0].startswith("4 stages, about 3:30 in all") and lines[1] == "stage 1/4: a"
    assert stages.left() == 6.0 + 6.0 + 30.0  # the other cloak stages scaled by 6/60; models keep their guess
    assert lines[2] == "stage 1/4 done in 0:06 (0:06 elapsed, about 0:42 left)"
    with stages.run("unplanned"):  # announced as it comes, counted in
        now[0] += 1.0
    assert lines[3] == "stage 5/5: unplanned"
    for label in ("b", "c", "m"):
        with stages.run(label):
            now[0] += 2.0
    assert lines[-1] == "stage 4/5 done in 0:02 (0:13 elapsed)" and stages.left() == 0.0
