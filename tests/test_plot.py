"""Plots: smoke tests with a headless backend, and what each panel shows."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import matrank  # noqa: E402
from matrank.cli import main  # noqa: E402
from matrank.plot import plot_counts, plot_density, plot_loss_trace, save_figure  # noqa: E402
from matrank.testing import rotated_spectrum  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_counting_curve_marks_threshold_plateau_and_floor():
    result = matrank.estimate_rank(
        rotated_spectrum(120, 20, cond=1e3, seed=0), method="exact"
    )
    ax = plot_counts(result)
    assert ax.get_xscale() == "log"
    assert "N(τ)" in ax.get_ylabel() and "threshold" in ax.get_xlabel()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("plateau (") for label in labels)
    assert any(label.startswith("τ = ") for label in labels)
    assert any(label.startswith("noise floor") for label in labels)
    assert ax.get_title() == "exact: rank 20 (converged)"


def test_counting_curve_is_signed_and_draws_no_band_without_a_plateau():
    spectrum = np.concatenate([np.linspace(1.0, 2.0, 10), -np.linspace(0.5, 1.0, 4)])
    result = matrank.estimate_rank(np.diag(spectrum), method="exact")
    ax = plot_counts(result)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "N⁺(τ) = #{λ > τ}" in labels and "N⁻(τ)" in labels
    positive = ax.get_lines()[1].get_ydata()
    negative = ax.get_lines()[2].get_ydata()
    assert positive[0] == 10 and negative[0] == 4  # at the lowest τ, the full split
    # a continuum: no plateau of a decade, no band, the status in the title
    flat = matrank.estimate_rank(np.diag(np.geomspace(1e-13, 1.0, 80)), method="exact")
    ax = plot_counts(flat)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert flat.status.name == "NO_PLATEAU"
    assert not any(label.startswith("plateau (") for label in labels)
    assert ax.get_title().endswith("(no_plateau)")


def test_density_and_loss_trace_panels():
    matrix = rotated_spectrum(60, 10, cond=4.0, seed=1)
    polynomial = matrank.estimate_rank(matrix, method="polynomial", seed=0, n_probes=20)
    ax = plot_density(polynomial)
    assert ax.get_xlabel() == "eigenvalue λ" and ax.get_ylabel() == "density of states"
    # the default polynomial variant also estimates N(τ), drawn with its ±2 stderr band
    ax = plot_counts(polynomial)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "±2 stderr" in labels and any(label.startswith("plateau (") for label in labels)
    langevin = matrank.estimate_rank(
        matrix,
        method="langevin",
        seed=0,
        step_size=0.1,
        sigma2=1.0,
        n_steps=400,
        n_average=300,
    )
    ax = plot_loss_trace(langevin, eigenvalues=np.linalg.eigvalsh(matrix))
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "exact expectation" in labels and ax.get_xlabel() == "Langevin step k"
    assert "Theorem 1 (continuous)" in labels
    # the theory curve ends near the estimate (both in rank units)
    theory = ax.get_lines()[1].get_ydata()
    assert abs(theory[-300:].mean() - langevin.rank) <= 4 * langevin.stderr


def test_panels_that_do_not_fit_the_result_are_refused():
    result = matrank.estimate_rank(np.eye(5), method="exact")
    with pytest.raises(matrank.MatrankValueError, match="density of states"):
        plot_density(result)
    with pytest.raises(matrank.MatrankValueError, match="loss trace"):
        plot_loss_trace(result)


def test_save_figure_and_the_cli_flag(tmp_path, capsys):
    result = matrank.estimate_rank(
        rotated_spectrum(80, 12, seed=2), method="lanczos", seed=0
    )
    path = tmp_path / "counts.png"
    assert save_figure(result, str(path)) == ["counting curve"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matrix = tmp_path / "m.npy"
    np.save(matrix, rotated_spectrum(50, 7, seed=3))
    out = tmp_path / "cli.png"
    assert main(["estimate", str(matrix), "--method", "exact", "--plot", str(out)]) == 0
    assert out.exists() and "saved counting curve" in capsys.readouterr().err
    bad = tmp_path / "missing-dir" / "x.png"
    assert main(["estimate", str(matrix), "--plot", str(bad)]) == 2
    assert "matrank: error:" in capsys.readouterr().err


def test_landscape_figure_has_log_axes_labels_and_one_curve_per_model(tmp_path):
    import torch

    from matrank.landscape import dataset_size_study
    from matrank.plot import plot_landscape

    studies = {}
    for width in (3, 6):
        torch.manual_seed(width)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, width, bias=False),
            torch.nn.ReLU(),
            torch.nn.Linear(width, 3, bias=False),
        ).double()
        X = torch.randn(20, 4, dtype=torch.float64)
        y = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(0))
        studies[f"width {width}"] = dataset_size_study(
            model, torch.nn.functional.cross_entropy, (X, y), orderings=5, seed=0, n_sizes=4
        )
    path = tmp_path / "landscape.png"
    figure = plot_landscape(studies, path=str(path))
    assert path.stat().st_size > 10_000
    panels = figure.axes
    assert len(panels) == 6 and all(ax.get_xscale() == "log" for ax in panels)
    assert panels[0].get_yscale() == "log" and panels[0].get_xlabel() == "samples k"
    # one legend for the figure, each model and guide named once
    assert all(ax.get_legend() is None for ax in panels)
    (legend,) = figure.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["width 3", "width 6", "1/k", "the bound"]
    assert np.isfinite(studies["width 3"].theorem_bound).all()  # bias-free ReLU
