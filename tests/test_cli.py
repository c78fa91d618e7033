"""The command line, driven through main(argv)."""

import json
import pickle

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from matrank.cli import main
from matrank.testing import laplacian, rotated_spectrum

MATRIX = rotated_spectrum(60, 11, seed=0)


@pytest.fixture
def files(tmp_path):
    paths = {}
    paths["npy"] = tmp_path / "a.npy"
    np.save(paths["npy"], MATRIX)
    paths["npz-dense"] = tmp_path / "dense.npz"
    np.savez(paths["npz-dense"], matrix=MATRIX)
    paths["npz-sparse"] = tmp_path / "sparse.npz"
    scipy.sparse.save_npz(paths["npz-sparse"], scipy.sparse.csr_matrix(laplacian(4, 6)))
    paths["mtx"] = tmp_path / "a.mtx"
    scipy.io.mmwrite(paths["mtx"], scipy.sparse.coo_matrix(laplacian(4, 6)))
    paths["pt"] = tmp_path / "a.pt"
    torch.save(torch.from_numpy(MATRIX), paths["pt"])
    return paths


@pytest.mark.parametrize(
    ("kind", "rank"),
    [("npy", 11), ("npz-dense", 11), ("npz-sparse", 20), ("mtx", 20), ("pt", 11)],
)
def test_estimate_reads_every_format(files, capsys, kind, rank):
    assert main(["estimate", str(files[kind]), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["rank"] == rank and payload["method"] == "exact"


def test_estimate_prints_a_readable_line(files, capsys):
    assert (
        main(["estimate", str(files["npy"]), "--method", "exact", "--threshold", "0.5"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("rank ") and "threshold=0.5" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["estimate", "missing.npy"], "No such file"),
        (["estimate", "matrix.csv"], "must end in .npy, .npz, .mtx or .pt"),
        (["estimate", "{npy}", "--threshold", "-1"], "`threshold` must be a real number"),
        (["estimate", "{bad}"], "must be symmetric"),
        # estimate_rank's own arguments are flags, not hyperparameters
        (["estimate", "{npy}", "--option", "seed=1"], "use --seed"),
        (["estimate", "{npy}", "--option", "method=exact"], "use --method"),
        (["estimate", "{npy}", "--option", "progress=false"], "use --no-progress"),
        (["estimate", "{npy}", "--option", "checkpoint=x"], "use --checkpoint"),
        (["estimate", "{npy}", "--option", "keep_checkpoint=true"], "--keep-checkpoint"),
        (["estimate", "{npy}", "--option", "checkpoint_every=1"], "--checkpoint-every"),
        (["estimate", "{npy}", "--option", "obj=1"], "use FILE"),
        (
            ["estimate", "{npy}", "--method", "langevin", "--option", 'preconditioner="a"'],
            "`preconditioner` must be a positive diagonal",
        ),
        # a figure that cannot be saved is refused before the estimate
        (["estimate", "{npy}", "--plot", "{tmp}/out.txt"], "a file name ending in"),
        (["estimate", "{npy}", "--plot", "{tmp}/no/x.png"], "in a folder that exists"),
        (["estimate", "{npy}", "--plot", "{tmp}"], "not the folder"),
        (["estimate", "{npy}", "--checkpoint", "{tmp}/no/c.ckpt"], "does not exist"),
        (["estimate", "{npy}", "--checkpoint", "{tmp}"], "which is a folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.triu(np.ones((4, 4))))
    argv = [a.format(npy=files["npy"], bad=bad, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert captured.out == ""  # nothing was estimated


def test_usage_errors_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["estimate", "a.npy", "--method", "svd"]) == 2


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/matrank-pwned", "w"))


def test_a_malicious_pickle_is_not_executed(tmp_path, capsys):
    import pathlib

    marker = pathlib.Path("/tmp/matrank-pwned")
    marker.unlink(missing_ok=True)
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([_Exploit()], dtype=object), allow_pickle=True)
    pt = tmp_path / "evil.pt"
    with open(pt, "wb") as handle:
        torch.save({"x": _Exploit()}, handle, pickle_module=pickle)
    assert main(["estimate", str(npy)]) == 2
    assert main(["estimate", str(pt)]) == 2
    assert not marker.exists()
    assert "error" in capsys.readouterr().err


def test_methods_and_demo(capsys):
    assert main(["methods"]) == 0
    assert "exact" in capsys.readouterr().out
    assert main(["demo", "--n", "200", "--rank", "15"]) == 0
    out = capsys.readouterr().out
    assert "method" in out and "truth" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("exact")]
    assert rows and rows[0][1] == "15" and rows[0][-1] == "15"
    # the black-box table: auto routes a loss-only oracle to evolution, which counts 12
    assert "auto → evolution: rank 12," in out
    methods = main(["methods"]) == 0 and capsys.readouterr().out
    assert "evolution" in methods and "loss values" in methods


def test_threshold_floor_from_the_command_line(files, capsys):
    assert (
        main(["estimate", str(files["npy"]), "--method", "exact", "--threshold", "floor"])
        == 0
    )
    assert capsys.readouterr().out.startswith("rank ")
    assert main(["estimate", str(files["npy"]), "--threshold", "high"]) == 2
    assert "expected a number or 'floor'; got 'high'" in capsys.readouterr().err


def test_relative_threshold_and_signed_counts_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "indefinite.npy"
    np.save(path, np.diag([4.0, -1.0, 2e-2, 1e-3, 0.0]))
    assert main(["estimate", str(path), "--relative-threshold", "1e-2", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["threshold"] == pytest.approx(0.04)
    assert (payload["rank"], payload["n_positive"], payload["n_negative"]) == (2, 1, 1)
    assert payload["diagnostics"]["relative_threshold"]["norm"] == pytest.approx(4.0)
    assert main(["estimate", str(path), "--relative-threshold", "1e-2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rank 2 = 1 positive + 1 negative (")
    assert "1 of the counted eigenvalues are negative" in out
    assert main(["estimate", str(path), "--relative-threshold", "2"]) == 2
    assert "expected a number in (0, 1); got '2'" in capsys.readouterr().err
    argv = ["estimate", str(path), "--relative-threshold", "0.1", "--threshold", "1"]
    assert main(argv) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_effective_ranks_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "indefinite.npy"
    eigenvalues = np.array([4.0, -1.0, 2e-2, 1e-3, 0.0])
    np.save(path, np.diag(eigenvalues))
    argv = ["estimate", str(path), "--threshold", "0.01", "--effective-ranks"]
    assert main([*argv, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["effective_ranks"]
    p = np.abs(eigenvalues[:4]) / np.abs(eigenvalues).sum()
    assert found["stable_rank"] == pytest.approx(np.sum(eigenvalues**2) / 16, rel=1e-12)
    assert found["entropy_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert (found["count"], found["n_positive"], found["n_negative"]) == (3, 2, 1)
    assert found["route"] == "exact" and found["threshold"] == 0.01
    assert main(argv) == 0
    last = capsys.readouterr().out.splitlines()[-1]  # after the result and its note
    assert last.startswith("effective ranks (exact): stable 1.06")
    assert last.endswith("|λ| > 0.01: 3 = 2 positive + 1 negative")


def test_landscape_writes_a_json_and_two_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "out.png"
    record = tmp_path / "out.json"
    argv = ["landscape", "--widths", "4", "--depths", "1", "--samples", "150"]
    argv += ["--orderings", "4", "--sizes", "3", "--max-epochs", "5", "--no-progress"]
    argv += ["--hessian-orderings", "2"]
    assert main([*argv, "--json", str(record), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "width 4, depth 5" in out and "width 16, depth 1" in out and "slope" in out
    payload = json.loads(record.read_text())
    labels = [m["label"] for m in payload["models"]]
    assert labels == ["width 4, depth 5", "width 16, depth 1"]
    first = payload["models"][0]
    assert first["training"]["epochs"] <= 5 and first["sweeps"] == ["width"]
    assert len(first["study"]["k"]) == 149 and len(first["study"]["sizes"]) == 3
    assert payload["options"]["samples"] == 150
    assert payload["options"]["hessian_orderings"] == 2
    assert first["study"]["hessian_orderings"] == 2
    for sweep in ("widths", "depths"):
        assert (tmp_path / f"out-{sweep}.png").stat().st_size > 10_000
        (tmp_path / f"out-{sweep}.png").unlink()
    # --replot redraws the same table and figures from the record, training nothing
    again = tmp_path / "again.json"
    replot = ["landscape", "--replot", str(record), "--figure", str(figure)]
    assert main([*replot, "--json", str(again)]) == 0
    assert capsys.readouterr().out == out
    assert json.loads(again.read_text())["models"] == payload["models"]
    assert json.loads(again.read_text())["options"]["widths"] == [4]
    for sweep in ("widths", "depths"):
        assert (tmp_path / f"out-{sweep}.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--widths", "4"], "`--widths` is an option of a new run"),
        (["--hessian-orderings", "3"], "`--hessian-orderings` is an option of a new run"),
        (["--json", "{record}"], "`--json` must not be one of the --replot records"),
        (["--json", "{tmp}/missing/x.json"], "`--json` must be in a folder that exists"),
    ],
)
def test_landscape_replot_refuses_in_one_line(tmp_path, capsys, argv, named):
    record = tmp_path / "r.json"
    record.write_text(json.dumps({"options": {}, "models": []}))
    argv = [a.format(tmp=tmp_path, record=record) for a in argv]
    assert main(["landscape", "--replot", str(record), "--figure", "", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1 and "Traceback" not in err
    missing = str(tmp_path / "nothing.json")
    assert main(["landscape", "--replot", str(record), missing, "--figure", ""]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and err.count("\n") == 1


def test_landscape_refuses_bad_options(tmp_path, capsys):
    argv = ["landscape", "--widths", "--depths", "--no-progress", "--figure", ""]
    assert main([*argv, "--json", str(tmp_path / "x.json")]) == 2
    assert "at least one model" in capsys.readouterr().err
    argv = ["landscape", "--widths", "4", "--depths", "--samples", "2", "--figure", ""]
    assert main([*argv, "--no-progress"]) == 2
    assert "samples" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--orderings", "0"], "`orderings` must be"),
        (["--hessian-orderings", "0"], "`hessian_orderings` must be"),
        (["--sizes", "0"], "`n_sizes` must be"),
        (["--relative-threshold", "2"], "`relative_threshold` must be"),
        (["--seed", "-1"], "`seed` must be"),
        (["--max-epochs", "0"], "`max_epochs` must be"),
        (["--target-loss", "-1"], "`target_loss` must be"),
        (["--widths", "0"], "`widths` must be"),
        (["--json", "{tmp}/missing/x.json"], "`--json` must be in a folder that exists"),
        (["--json", "{tmp}"], "`--json` must be a file"),
        (["--figure", "{tmp}/x.txt"], "`--figure` must end in one of"),
        (["--figure", "{tmp}/missing/f.png"], "`--figure` must be in a folder"),
    ],
)
def test_landscape_checks_options_and_outputs_before_training(
    tmp_path, capsys, monkeypatch, argv, named
):
    import matrank.landscape_experiment as experiment

    def never(*args, **kwargs):
        raise AssertionError("a model was trained before the options were checked")

    monkeypatch.setattr(experiment, "train", never)
    argv = [a.format(tmp=tmp_path) for a in argv]
    defaults = ["--json", str(tmp_path / "out.json"), "--figure", str(tmp_path / "f.png")]
    assert main(["landscape", "--no-progress", *defaults, *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1 and "Traceback" not in err
