"""Random cut forests in NumPy: the trees SageMaker's Random Cut Forest builds, and their displacement scores.

A random cut tree over a sample of points splits a node's bounding box at a uniformly random value
of a dimension chosen with probability proportional to the box's extent along it, until each leaf
holds one distinct point (Guha et al., "Robust Random Cut Forest Based Anomaly Detection on
Streams", ICML 2016). A new point's score in a tree is the expected number of sample points that
inserting it would displace: walking from the root, at each node the chance that a random cut of
the box grown to include the point separates the point first is the growth over the grown box's
total extent, and that separation displaces the node's points. The forest's score is the mean over
trees divided by ``log2`` of the sample size, so scores sit near 1 for ordinary points whatever the
tree size, and are several times that for anomalies.

Trees are stored flat (one array per field, nodes of every tree concatenated) and scored for a whole
batch of points at once, level by level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Forest:
    """``num_trees`` flat trees: children (-1 for a leaf), cut dimension and value, box, size."""

    left: np.ndarray  # int32 [nodes]
    right: np.ndarray
    dim: np.ndarray  # int32 [nodes]
    cut: np.ndarray  # float64 [nodes]
    low: np.ndarray  # float64 [nodes, d]: the node's bounding box
    high: np.ndarray
    size: np.ndarray  # int32 [nodes]: sample points under the node
    roots: np.ndarray  # int32 [trees]
    sample_size: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "left": self.left,
            "right": self.right,
            "dim": self.dim,
            "cut": self.cut,
            "low": self.low,
            "high": self.high,
            "size": self.size,
            "roots": self.roots,
            "sample_size": np.asarray([self.sample_size]),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Forest:
        return cls(
            a["left"], a["right"], a["dim"], a["cut"], a["low"], a["high"], a["size"], a["roots"],
            int(a["sample_size"][0]),
        )


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.left: list[int] = []
        self.right: list[int] = []
        self.dim: list[int] = []
        self.cut: list[float] = []
        self.low: list[np.ndarray] = []
        self.high: list[np.ndarray] = []
        self.size: list[int] = []

    def node(self, points: np.ndarray) -> int:
        """Add the subtree of ``points`` (at least one); returns its node index."""
        index = len(self.size)
        low, high = points.min(axis=0), points.max(axis=0)
        for column, value in ((self.low, low), (self.high, high)):
            column.append(value)
        self.size.append(len(points))
        self.left.append(-1)
        self.right.append(-1)
        self.dim.append(-1)
        self.cut.append(0.0)
        extent = high - low
        total = float(extent.sum())
        if len(points) == 1 or total <= 0.0:  # one point, or copies of one point: a leaf
            return index
        r = self.rng.uniform(0.0, total)
        cumulative = np.cumsum(extent)
        d = min(int(np.searchsorted(cumulative, r, side="right")), len(extent) - 1)
        value = float(low[d] + (r - (cumulative[d] - extent[d])))
        goes_left = points[:, d] <= value
        if goes_left.all() or not goes_left.any():  # the cut fell on the box's edge
            value = float((low[d] + high[d]) / 2)
            goes_left = points[:, d] <= value
        self.dim[index], self.cut[index] = d, value
        self.left[index] = self.node(points[goes_left])
        self.right[index] = self.node(points[~goes_left])
        return index


def build(x: np.ndarray, num_trees: int, sample_size: int, seed: int = 0) -> Forest:
    """A forest of ``num_trees`` trees, each over its own uniform sample of ``sample_size`` rows of ``x``."""
    rng = np.random.default_rng(seed)
    builder = _Builder(rng)
    roots = []
    size = min(sample_size, len(x))
    for _ in range(num_trees):
        sample = x[rng.choice(len(x), size=size, replace=False)].astype(np.float64)
        roots.append(builder.node(sample))
    return Forest(
        np.asarray(builder.left, dtype=np.int32),
        np.asarray(builder.right, dtype=np.int32),
        np.asarray(builder.dim, dtype=np.int32),
        np.asarray(builder.cut, dtype=np.float64),
        np.vstack(builder.low),
        np.vstack(builder.high),
        np.asarray(builder.size, dtype=np.int32),
        np.asarray(roots, dtype=np.int32),
        size,
    )


def scores(forest: Forest, x: np.ndarray) -> np.ndarray:
    """Each row's anomaly score: the mean expected displacement over the trees, over log2(sample size)."""
    x = np.asarray(x, dtype=np.float64)
    total = np.zeros(len(x))
    for root in forest.roots:
        node = np.full(len(x), root, dtype=np.int64)
        alive = np.ones(len(x))  # the chance that the point is not separated yet
        displaced = np.zeros(len(x))
        active = np.ones(len(x), dtype=bool)
        while active.any():
            n = node[active]
            low, high = forest.low[n], forest.high[n]
            point = x[active]
            grown_low, grown_high = np.minimum(low, point), np.maximum(high, point)
            grown = (grown_high - grown_low).sum(axis=1)
            growth = grown - (high - low).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                separate = np.where(grown > 0, growth / grown, 0.0)
            displaced[active] += alive[active] * separate * forest.size[n]
            alive[active] *= 1.0 - separate
            leaf = forest.left[n] < 0
            step = np.where(point[np.arange(len(n)), np.maximum(forest.dim[n], 0)] <= forest.cut[n],
                            forest.left[n], forest.right[n])
            node[active] = np.where(leaf, n, step)
            done = np.flatnonzero(active)[leaf]
            active[done] = False
        total += displaced
    return total / len(forest.roots) / np.log2(max(forest.sample_size, 2))
