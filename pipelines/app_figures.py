"""What the app's page draws (Plotly): the library's map, a result's timeline, a track's self-similarity. Each
takes the explorer's data (`explore.py`) and returns a figure; the page (`app.py`) places them. Needs plotly."""

from collections import Counter
from typing import Any


# The map's legend (or colour bar) goes below the points: on the right, Plotly's toolbar covered its title and the
# hover labels of the points nearest the edge ran over it. Its height comes out of the plot's.
BELOW = {"x": 0.0, "xanchor": "left", "y": 0.0, "yanchor": "top"}
BELOW_COLOURBAR = {**BELOW, "orientation": "h", "len": 0.5, "lenmode": "fraction", "thickness": 12}


def map_figure(library, colour: str = "folder", height: int = 620):
    """The library as a Plotly scattergl map, one colour per value of `colour` (a metadata column)."""
    import numpy as np
    import plotly.graph_objects as go

    from .explore_map import MAX_CATEGORIES

    figure = go.Figure()
    count = len(library)
    size = 8 if count < 1_000 else 5 if count < 20_000 else 3
    if count:
        ids = np.arange(count)
        xy = library.layout
        names = np.asarray(library.names, dtype=object)
        column = library.column(colour)
        if column.numeric:
            values = np.array([np.nan if v is None else v for v in column.values], dtype=float)
            known = ~np.isnan(values)
            if (~known).any():
                figure.add_trace(_points(go, xy, ids, names, ~known, "(unknown)", size, color="#c8c8c8"))
            trace = _points(go, xy, ids, names, known, colour, size)
            trace.marker.update(color=values[known], colorscale="Viridis", showscale=True, colorbar=BELOW_COLOURBAR)
            trace.marker.colorbar.title = {"text": colour, "side": "top"}
            trace.hovertemplate = f"%{{hovertext}}<br>{colour}: %{{marker.color:.4g}}<extra></extra>"
            figure.add_trace(trace)
        else:
            values = ["(none)" if v is None else str(v) for v in column.values]
            top = [v for v, _ in Counter(values).most_common(MAX_CATEGORIES)]
            labels = np.asarray([v if v in top else "other" for v in values], dtype=object)
            order = sorted(set(top) - {"(none)"}) + [v for v in ("other", "(none)") if v in labels]
            for value in order:
                figure.add_trace(_points(go, xy, ids, names, labels == value, value, size))
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, hovermode="closest", uirevision="map",
        legend={**BELOW, "title": {"text": colour, "side": "top left"}, "itemsizing": "constant", "orientation": "h"},
        plot_bgcolor="white", xaxis={"visible": False}, yaxis={"visible": False}, clickmode="event",
    )  # fmt: skip
    return figure


def _points(go, xy, ids, names, mask, label, size, color=None):
    marker = {"size": size, "opacity": 0.85}
    if color:
        marker["color"] = color
    return go.Scattergl(
        x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=str(label), customdata=ids[mask],
        hovertext=names[mask], hovertemplate="%{hovertext}<extra>" + str(label) + "</extra>", marker=marker,
    )  # fmt: skip


def timeline_figure(result: dict[str, Any]):
    """A result's timeline: each of its 3 s chunks' best cosine with the query, the best chunk highlighted."""
    import numpy as np
    import plotly.graph_objects as go

    starts, scores = np.asarray(result["timeline_starts"]), np.asarray(result["timeline_scores"])
    width = float(np.diff(starts).min()) if len(starts) > 1 else 3.072
    best = int(np.argmax(scores))
    colours = ["#9aa5b1"] * len(scores)
    colours[best] = "#e8590c"
    figure = go.Figure(
        go.Bar(
            x=starts + width / 2, y=scores, width=width * 0.92, marker_color=colours,
            customdata=starts, hovertemplate="%{customdata:.1f} s: %{y:.3f}<extra></extra>",
        )  # fmt: skip
    )
    spread = max(float(scores.max() - scores.min()), 0.05)
    low = max(-1.0, float(scores.min()) - spread)  # the differences are what to see, not the distance to 0
    figure.update_layout(
        height=150, margin={"l": 45, "r": 10, "t": 8, "b": 32}, showlegend=False, bargap=0,
        xaxis={"title": {"text": "seconds", "standoff": 4}, "range": [0, starts[-1] + width]},
        yaxis={"title": {"text": "cosine"}, "range": [low, 1.0]}, plot_bgcolor="white",
    )  # fmt: skip
    return figure


def self_similarity_figure(matrix, starts, name: str):
    """A track's chunks against each other (cosine), as an image; the axes are seconds into the track."""
    import numpy as np
    import plotly.graph_objects as go

    starts = np.asarray(starts, dtype=float)
    width = float(np.diff(starts).min()) if len(starts) > 1 else 3.072
    centres = starts + width / 2
    figure = go.Figure(
        go.Heatmap(
            z=matrix, x=centres, y=centres, colorscale="Viridis", zmax=1.0, colorbar={"title": "cosine"},
            hovertemplate="the 3 s around %{x:.1f} s and around %{y:.1f} s: %{z:.3f}<extra></extra>",
        )  # fmt: skip
    )
    figure.update_layout(
        height=560, margin={"l": 50, "r": 10, "t": 40, "b": 40}, title={"text": f"{name}: self-similarity"},
        xaxis={"title": {"text": "seconds"}, "constrain": "domain"},
        yaxis={"title": {"text": "seconds"}, "autorange": "reversed", "scaleanchor": "x"},
    )  # fmt: skip
    return figure


__all__ = ["map_figure", "self_similarity_figure", "timeline_figure"]
