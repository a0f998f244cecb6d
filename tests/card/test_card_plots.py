"""The card's plots stay legible: titles inside the figure, no text drawn over other text."""

import itertools

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pocketqa.card.plots import plot_has_no_ans, plot_threshold_curve, split_title  # noqa: E402

LONG_NAME = "pocketqa-minilm-l6-h384-distilled-from-mpnet-base-squad2-int8-onnx-v2"


SPLITS = {
    # a tiny model that always abstains: HasAns 0, NoAns 100 (the bar label under a legend)
    "tiny_model": {"exact": 50.0, "f1": 50.0, "HasAns_exact": 0.0, "HasAns_f1": 0.0, "NoAns_exact": 100.0,
                   "NoAns_f1": 100.0},
    "near_zero": {"exact": 1.2, "f1": 2.5, "HasAns_exact": 0.0, "HasAns_f1": 3.1, "NoAns_exact": 2.4, "NoAns_f1": 2.4},
    "near_hundred": {"exact": 98.5, "f1": 99.7, "HasAns_exact": 97.0, "HasAns_f1": 99.4, "NoAns_exact": 100.0,
                     "NoAns_f1": 100.0},
}


def split_scores(values: str) -> dict:
    return {**SPLITS[values], "total": 11873, "HasAns_total": 5928, "NoAns_total": 5945, "threshold": -1.2345}


def curve(small: bool) -> dict:
    x = np.linspace(-8.0, 6.0, 50)
    base = 2.0 if small else 90.0
    f1 = base + np.sin(x) * (1.0 if small else 5.0)
    return {"thresholds": x, "f1": f1, "exact": f1 - 0.5, "HasAns_f1": f1 + 0.3, "NoAns_f1": f1 - 0.3}


def texts(fig) -> list:
    """Every drawn, non-empty text of the figure: titles, axis labels, tick labels inside the
    view (matplotlib keeps, undrawn, some just outside it), bar labels, legend entries."""
    found = list(fig.texts)
    for ax in fig.axes:
        found += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        lo, hi = sorted(ax.get_xlim())
        found += [t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
        lo, hi = sorted(ax.get_ylim())
        found += [t for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
        if ax.get_legend() is not None:
            found += ax.get_legend().get_texts()
    for legend in fig.legends:
        found += legend.get_texts()
    return [t for t in found if t.get_visible() and t.get_text().strip()]


def assert_legible(fig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the renderer savefig used (the Figure was made without pyplot)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    boxes = []
    for text in texts(fig):
        box = text.get_window_extent(renderer)
        assert box.x0 >= figure_box.x0 - 0.5 and box.x1 <= figure_box.x1 + 0.5, f"{text.get_text()!r} is clipped"
        assert box.y0 >= figure_box.y0 - 0.5 and box.y1 <= figure_box.y1 + 0.5, f"{text.get_text()!r} is clipped"
        boxes.append((text.get_text(), box))
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    legend_texts = {t.get_text() for legend in legends for t in legend.get_texts()}
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert figure_box.x0 - 0.5 <= box.x0 and box.x1 <= figure_box.x1 + 0.5, "legend is clipped"
        assert figure_box.y0 - 0.5 <= box.y0 and box.y1 <= figure_box.y1 + 0.5, "legend is clipped"
        for label, other in boxes:
            if label not in legend_texts and box.overlaps(other):
                raise AssertionError(f"the legend covers {label!r}")
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        if a in legend_texts and b in legend_texts:
            continue  # the legend lays out its own entries
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


@pytest.mark.parametrize("values", sorted(SPLITS))
@pytest.mark.parametrize("name", ["tiny", LONG_NAME])
def test_has_no_ans_plot_is_legible(tmp_path, name, values):
    scores = split_scores(values)
    fig = plot_has_no_ans(scores, tmp_path / "has_no_ans.png", split_title(name, scores))
    assert (tmp_path / "has_no_ans.png").stat().st_size > 0
    assert_legible(fig)


@pytest.mark.parametrize("small", [True, False], ids=["small", "large"])
@pytest.mark.parametrize("name", ["tiny", LONG_NAME])
def test_threshold_curve_plot_is_legible(tmp_path, name, small):
    scores = {"threshold": -1.2345}
    title = f"{name} on dev-v2.0.json (11873 questions)"
    fig = plot_threshold_curve(curve(small), scores, tmp_path / "threshold_curve.png", title)
    assert (tmp_path / "threshold_curve.png").stat().st_size > 0
    assert_legible(fig)
