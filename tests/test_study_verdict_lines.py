"""`karmic study report`'s verdict lines name the p-value that decided each verdict (for an
equivalence, the test against the margin) and mark a check against a constant (issue 36)."""

from __future__ import annotations

from test_study import _analyse, _greater, tmp  # noqa: F401  (tmp: the fixture)

from pipelines.study_report import _fmt, decided_by, verdict_table

EQUIV = """
[[predictions]]
id = "same"
metric = "hits_per_agent_step"
test = "equivalent"
margin = 0.10
a = { condition = "tvt" }
b = { condition = "baseline" }
"""
CONST = """
[[predictions]]
id = "const"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { value = 0.01 }
"""


def _vals(a, b):
    return ({("tvt", "late", s): [a[s - 1]] for s in (1, 2, 3)}
            | {("baseline", "late", s): [b[s - 1]] for s in (1, 2, 3)}
            | {("random", "late", s): [0.0] for s in (1, 2, 3)})


def test_supported_names_the_support_p(tmp):  # noqa: F811
    v = _analyse(tmp, _greater("p", "hits_per_agent_step", "tvt", "baseline"),
                 _vals([0.030, 0.031, 0.032], [0.020, 0.021, 0.022]))["p"]
    assert v["verdict"] == "supported"
    line = decided_by(v)
    assert f"p = {_fmt(v['p_support_holm'], 3)} (Holm), the greater test" in line


def test_equivalence_names_the_test_against_the_margin(tmp):  # noqa: F811
    v = _analyse(tmp, EQUIV, _vals([0.0201, 0.0203, 0.0199], [0.0200, 0.0202, 0.0198]))["same"]
    assert v["verdict"] == "supported"
    assert f"p = {_fmt(v['p_support_holm'], 3)} (Holm), the TOST against the margin +-{_fmt(v['margin'])}" in decided_by(v)
    far = _analyse(tmp, EQUIV, _vals([0.0402, 0.0404, 0.0406], [0.0202, 0.0204, 0.0206]))["same"]
    assert far["verdict"] == "contradicted"
    assert f"p = {_fmt(far['p_contra_holm'], 3)} (Holm), the test of |diff| > margin" in decided_by(far)


def test_a_check_against_a_constant_says_so(tmp):  # noqa: F811
    v = _analyse(tmp, CONST, _vals([0.030, 0.031, 0.032], [0.020, 0.021, 0.022]))["const"]
    assert "one-sample, against the constant 0.01" in decided_by(v)
    row = verdict_table([v])[2]
    assert "the constant 0.01 (a check against a constant)" in row and "decided by" in row


def test_zero_is_written_as_zero():
    assert _fmt(-5.551115123125783e-17) == "0"
