"""Landscape records read back: round trips, one-line refusals, merging split runs."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matrank import MatrankValueError
from matrank.landscape import LandscapeStudy
from matrank.landscape.experiment import Model, Training
from matrank.landscape.record import merge, read


def _study(
    rng: np.random.Generator, n: int, s: int, r: int, *, nan: bool
) -> LandscapeStudy:
    q = 5
    theorem = rng.random((s, r))
    if nan:
        theorem[:] = np.nan
    others = dict(
        losses=rng.random(n),
        k=np.arange(1, n),
        delta_mean=rng.random(n - 1),
        delta_quantiles=rng.random((q, n - 1)),
        quantile_levels=(0.05, 0.25, 0.5, 0.75, 0.95),
        sizes=np.sort(rng.choice(np.arange(1, n), size=s, replace=False)),
        hessian_orderings=3,
        threshold=float(rng.random()),
        dim=int(rng.integers(1, 100)),
        orderings=7,
        radii=rng.random(r),
        measured=rng.random((s, r)),
        bound=rng.random((s, r)),
        violations=rng.random((s, r)) < 0.5,
        constant=float("nan") if nan else float(rng.random()),
        seconds={"rank": float(rng.random())},
    )
    # the rest are the per-size arrays (hessian_difference … rank_stderr), shape (S,)
    given = {**others, "theorem_bound": theorem}
    per_size = {
        field.name: rng.random(s)
        for field in dataclasses.fields(LandscapeStudy)
        if field.name not in given
    }
    return LandscapeStudy(**given, **per_size)


def _model(width: int = 4, depth: int = 5, seed: int = 0) -> Model:
    study = _study(np.random.default_rng(seed), 12, 3, 2, nan=False)
    training = Training(
        epochs=3, loss=0.5, accuracy=0.9, target_loss=0.05, reached=False, seconds=1.0
    )
    return Model(width, depth, ("width",), training, study)


def _same(a: LandscapeStudy, b: LandscapeStudy) -> None:
    for field in dataclasses.fields(LandscapeStudy):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype.kind == y.dtype.kind and x.shape == y.shape, field.name
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        elif isinstance(x, float) and np.isnan(x):
            assert np.isnan(y), field.name
        else:
            assert x == y, field.name


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 40),
    s=st.integers(1, 6),
    r=st.integers(1, 4),
    nan=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_study_survives_json_exactly(n, s, r, nan, seed):
    s = min(s, n - 1)
    study = _study(np.random.default_rng(seed), n, s, r, nan=nan)
    back = LandscapeStudy.from_dict(
        json.loads(json.dumps(study.to_dict(), allow_nan=False))
    )
    _same(study, back)


def test_a_model_survives_json_exactly():
    model = _model()
    back = Model.from_dict(json.loads(json.dumps(model.to_dict())))
    assert (back.width, back.depth, back.sweeps, back.training) == (
        model.width,
        model.depth,
        model.sweeps,
        model.training,
    )
    _same(model.study, back.study)


def _set(path, value):
    def change(record):
        *parents, last = path
        for key in parents:
            record = record[key]
        if value is KeyError:
            del record[last]
        else:
            record[last] = value(record[last]) if callable(value) else value

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_set(("study", "rank"), KeyError), "lacks 'rank'"),
        (
            _set(("study", "losses"), lambda v: ["0.1", *v[1:]]),
            "'losses' must hold numbers",
        ),
        (_set(("study", "rank"), lambda v: [True, *v[1:]]), "'rank' must hold numbers"),
        (
            _set(("study", "measured"), lambda v: [[None, *v[0][1:]], *v[1:]]),
            "'measured' must hold numbers",
        ),
        # json reads Infinity and NaN, which no measurement may be
        (
            _set(("study", "measured"), lambda v: [[float("inf"), *v[0][1:]], *v[1:]]),
            "'measured' must be finite",
        ),
        (
            _set(("study", "losses"), lambda v: [float("nan"), *v[1:]]),
            "'losses' must be finite",
        ),
        (_set(("study", "threshold"), float("nan")), "'threshold' must be a finite"),
        (_set(("study", "measured"), lambda v: v[:-1]), "'measured' has shape"),
        (
            _set(("study", "delta_quantiles"), lambda v: v[:2]),
            "'delta_quantiles' has shape",
        ),
        (_set(("study", "k"), lambda v: [0, *v[1:]]), "'k' must be 1"),
        (_set(("study", "k"), lambda v: [1.5, *v[1:]]), "'k' must hold integers"),
        (_set(("study", "sizes"), lambda v: v[::-1]), "'sizes' must increase"),
        (_set(("study", "violations"), lambda v: [[1] * len(v[0])] * len(v)), "true/false"),
        (_set(("study", "constant"), "big"), "'constant' must be"),
        (_set(("study", "dim"), 0), "'dim' must be"),
        (_set(("study", "seconds"), ["rank"]), "'seconds' must map"),
        (_set(("study",), []), "a study must be an object"),
        (_set(("training", "reached"), 1), "'training.reached'"),
        (_set(("training", "loss"), KeyError), "'training' must have exactly"),
        (_set(("sweeps",), ["breadth"]), "'sweeps' must list"),
        (_set(("width",), 0), "'width' must be"),
    ],
)
def test_a_bad_field_is_refused_in_one_line_naming_it(tmp_path, change, named):
    record = {"options": {}, "models": [_model().to_dict()]}
    change(record["models"][0])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    with pytest.raises(MatrankValueError) as caught:
        read(path)
    text = str(caught.value)
    assert named in text and "\n" not in text and "r.json" in text


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "no list of 'models'"),
        ('{"models": {}}', "no list of 'models'"),
        ('{"models": [], "options": 3}', "'options' must be an object"),
    ],
)
def test_a_file_that_is_no_record_is_refused(tmp_path, content, named):
    path = tmp_path / "r.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(MatrankValueError, match=named):
        read(path)
    with pytest.raises(MatrankValueError, match="cannot read"):
        read(tmp_path / "missing.json")


def _write(path, options, *models):
    path.write_text(
        json.dumps({"options": options, "models": [m.to_dict() for m in models]})
    )
    return path


def test_merge_joins_split_runs_in_sweep_order_and_keeps_their_options(tmp_path):
    depth_model = dataclasses.replace(_model(16, 2, seed=2), sweeps=("depth",))
    a = _write(tmp_path / "a.json", {"seed": 0, "widths": [4]}, _model(8, 5, 1))
    b = _write(tmp_path / "b.json", {"seed": 0, "sizes": 3}, depth_model, _model(4, 5))
    options, models = merge([a, b])
    assert [m.label for m in models] == [
        "width 4, depth 5",
        "width 8, depth 5",
        "width 16, depth 2",
    ]
    assert options["seed"] == 0 and options["sizes"] == 3 and "widths" not in options
    assert options["hessian_orderings"] == models[1].study.hessian_orderings


def test_merge_refuses_the_same_model_twice_and_different_options(tmp_path):
    a = _write(tmp_path / "a.json", {"seed": 0}, _model(4, 5))
    b = _write(tmp_path / "b.json", {"seed": 0}, _model(4, 5, seed=1))
    with pytest.raises(MatrankValueError, match="width 4, depth 5 is in both"):
        merge([a, b])
    c = _write(tmp_path / "c.json", {"seed": 1}, _model(8, 5))
    with pytest.raises(MatrankValueError, match="seed is 1 in one and 0 in the other"):
        merge([a, c])
    # an option the first record does not state still has to agree between the others
    d = _write(tmp_path / "d.json", {"sizes": 3}, _model(16, 5))
    e = _write(tmp_path / "e.json", {"sizes": 8}, _model(32, 5))
    with pytest.raises(MatrankValueError, match="sizes is 8 in one and 3"):
        merge([a, d, e])
    # the studies' own ordering counts stand in for a record without them
    other = _model(64, 5)
    other = dataclasses.replace(
        other, study=dataclasses.replace(other.study, orderings=other.study.orderings + 1)
    )
    f = _write(tmp_path / "f.json", {"seed": 0}, other)
    with pytest.raises(MatrankValueError, match="orderings is"):
        merge([a, f])


def test_a_record_is_not_mutated_by_reading(tmp_path):
    record = {"options": {}, "models": [_model().to_dict()]}
    kept = copy.deepcopy(record)
    Model.from_dict(record["models"][0])
    assert record == kept
