"""XGBoost's deprecated binary model format, converted to the JSON model document.

SageMaker's XGBoost containers 1.3-1 to 1.7-1 save ``xgboost-model`` with ``Booster.save_model`` and
no file extension, which XGBoost before 2.1 writes in its old binary format (``binf`` header). XGBoost
3.x reads only JSON and UBJSON, so a model trained on AWS would not load here. This module reads the
binary layout (``LearnerModelParamLegacy``, ``GBTreeModelParam``, ``TreeParam``, tree nodes and
statistics, as written by XGBoost 1.0 to 2.0) and builds the JSON document that XGBoost 1.7 itself
writes for the same model, which every later XGBoost loads.

Objective parameters are kept in the model's attributes by XGBoost 1.6 and later; for older models
their defaults are used. They affect training, not predictions, so a converted model predicts exactly
as the original.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"binf"
_LEARNER_PARAM = struct.Struct("<fIiiiIIIi25i")  # 136 bytes
_GBTREE_PARAM = struct.Struct("<iiiiqii32i")  # 160 bytes
_GBLINEAR_PARAM = struct.Struct("<Ii32i")  # 136 bytes
_TREE_PARAM = struct.Struct("<iiiiIi31i")  # 148 bytes
_NODE = np.dtype([("parent", "<i4"), ("left", "<i4"), ("right", "<i4"), ("sindex", "<u4"), ("info", "<f4")])
_STAT = np.dtype([("loss_chg", "<f4"), ("sum_hess", "<f4"), ("base_weight", "<f4"), ("leaf_child_cnt", "<i4")])
_LOW31 = (1 << 31) - 1

# Objective parameter blocks as XGBoost 1.7 writes them with default values.
_OBJECTIVE_PARAMS: dict[str, tuple[str, dict[str, str]]] = {
    "reg:squarederror": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "reg:linear": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "reg:squaredlogerror": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "reg:logistic": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "binary:logistic": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "binary:logitraw": ("reg_loss_param", {"scale_pos_weight": "1"}),
    "reg:pseudohubererror": ("pseudo_huber_param", {"huber_slope": "1"}),
    "reg:tweedie": ("tweedie_regression_param", {"tweedie_variance_power": "1.5"}),
    "count:poisson": ("poisson_regression_param", {"max_delta_step": "0.7"}),
    "survival:aft": ("aft_loss_param", {"aft_loss_distribution": "normal", "aft_loss_distribution_scale": "1"}),
    "rank:pairwise": ("lambda_rank_param", {"fix_list_weight": "0", "num_pairsample": "1"}),
    "rank:ndcg": ("lambda_rank_param", {"fix_list_weight": "0", "num_pairsample": "1"}),
    "rank:map": ("lambda_rank_param", {"fix_list_weight": "0", "num_pairsample": "1"}),
}


class LegacyModelError(ValueError):
    """The bytes are not a model in XGBoost's old binary format, or one this reader does not know."""


def is_legacy_binary(raw: bytes) -> bool:
    """Whether ``raw`` looks like the old binary format (not JSON, UBJSON or a pickle)."""
    return raw[:4] == MAGIC or (len(raw) > _LEARNER_PARAM.size and raw[:1] not in (b"{", b"\x80"))


@dataclass(slots=True)
class _Reader:
    raw: bytes
    pos: int = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise LegacyModelError(f"the model ends early (wanted {n} bytes at offset {self.pos})")
        chunk = self.raw[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self.take(layout.size))

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u64()).decode("utf-8", "replace")

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        return np.frombuffer(self.take(dtype.itemsize * count), dtype=dtype)

    def float_vector(self) -> list[float]:
        return self.array(np.dtype("<f4"), self.u64()).astype(float).tolist()


def to_json_document(raw: bytes) -> dict[str, Any]:
    """The JSON model document (as XGBoost 1.7 writes it) of a model in the old binary format.

    Raises:
        LegacyModelError: the bytes are not such a model.
    """
    reader = _Reader(raw, 4 if raw[:4] == MAGIC else 0)
    base_score, num_feature, num_class, extra_attrs, _, major, minor, num_target, from_average, *_ = reader.unpack(
        _LEARNER_PARAM
    )
    objective = reader.string()
    booster = reader.string()
    if booster not in ("gbtree", "dart", "gblinear"):
        raise LegacyModelError(f"unknown booster '{booster[:40]}' (not an XGBoost binary model?)")
    gradient_booster = _read_booster(reader, booster)
    attributes: dict[str, str] = {}
    if extra_attrs:
        for _ in range(reader.u64()):
            key, value = reader.string(), reader.string()
            if not key.startswith("SAVED_PARAM_"):
                attributes[key] = value
    objective_json = _objective(objective, num_class, attributes.pop("objective", ""))
    if objective == "count:poisson" and reader.pos < len(raw):
        objective_json.setdefault("poisson_regression_param", {})["max_delta_step"] = reader.string()
    return {
        "version": [int(major), int(minor), 0],
        "learner": {
            "attributes": attributes,
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": gradient_booster,
            "learner_model_param": {
                "base_score": repr(float(np.float32(base_score))),
                "boost_from_average": str(int(from_average)),
                "num_class": str(int(num_class)),
                "num_feature": str(int(num_feature)),
                "num_target": str(max(int(num_target), 1)),
            },
            "objective": objective_json,
        },
    }


def _objective(name: str, num_class: int, saved: str) -> dict[str, Any]:
    """The objective's configuration: as saved in the attributes (XGBoost 1.6+), else its defaults."""
    try:
        config = json.loads(saved) if saved else None
    except ValueError:
        config = None
    if isinstance(config, dict) and config.get("name") == name:
        return config
    if name.startswith("multi:"):
        return {"name": name, "softmax_multiclass_param": {"num_class": str(int(num_class))}}
    block = _OBJECTIVE_PARAMS.get(name)
    return {"name": name, block[0]: dict(block[1])} if block else {"name": name}


def _read_booster(reader: _Reader, name: str) -> dict[str, Any]:
    if name == "gblinear":
        reader.unpack(_GBLINEAR_PARAM)
        return {"name": "gblinear", "model": {"boosted_rounds": 0, "weights": reader.float_vector()}}
    model = _read_gbtree(reader)
    if name == "dart":
        weights = reader.float_vector() if model["trees"] else []
        return {"name": "dart", "gbtree": {"name": "gbtree", "model": model}, "weight_drop": weights}
    return {"name": "gbtree", "model": model}


def _read_gbtree(reader: _Reader) -> dict[str, Any]:
    num_trees, num_parallel_tree, _, _, _, _, size_leaf_vector, *_ = reader.unpack(_GBTREE_PARAM)
    if num_trees < 0 or num_trees > 10_000_000:
        raise LegacyModelError(f"implausible tree count {num_trees}")
    trees = [_read_tree(reader, i) for i in range(num_trees)]
    tree_info = reader.array(np.dtype("<i4"), num_trees).tolist() if num_trees else []
    return {
        "gbtree_model_param": {
            "num_parallel_tree": str(max(int(num_parallel_tree), 1)),
            "num_trees": str(int(num_trees)),
            "size_leaf_vector": str(int(size_leaf_vector)),
        },
        "tree_info": tree_info,
        "trees": trees,
    }


def _read_tree(reader: _Reader, index: int) -> dict[str, Any]:
    _, num_nodes, num_deleted, _, num_feature, size_leaf_vector, *_ = reader.unpack(_TREE_PARAM)
    if num_nodes <= 0:
        raise LegacyModelError(f"tree {index} has {num_nodes} nodes")
    nodes = reader.array(_NODE, num_nodes)
    stats = reader.array(_STAT, num_nodes)
    return {
        "base_weights": stats["base_weight"].astype(float).tolist(),
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": (nodes["sindex"] >> 31).astype(int).tolist(),
        "id": index,
        "left_children": nodes["left"].tolist(),
        "loss_changes": stats["loss_chg"].astype(float).tolist(),
        "parents": (nodes["parent"].view("<u4") & _LOW31).astype(int).tolist(),
        "right_children": nodes["right"].tolist(),
        "split_conditions": nodes["info"].astype(float).tolist(),
        "split_indices": (nodes["sindex"] & _LOW31).astype(int).tolist(),
        "split_type": [0] * int(num_nodes),
        "sum_hessian": stats["sum_hess"].astype(float).tolist(),
        "tree_param": {
            "num_deleted": str(int(num_deleted)),
            "num_feature": str(int(num_feature)),
            "num_nodes": str(int(num_nodes)),
            "size_leaf_vector": str(int(size_leaf_vector)),
        },
    }
