"""Ground Truth's built-in task types: the workers' answers, their consolidation, the output manifest.

A labeling job names its task type by AWS's pre-annotation Lambda (``PreHumanTaskLambdaArn``,
``arn:aws:lambda:<region>:<account>:function:PRE-<Type>``) or its consolidation Lambda
(``ACS-<Type>``); those Lambda functions belong to AWS and do what this module does.

Consolidation of the answers of ``NumberOfHumanWorkersPerDataObject`` workers:

* single-label classification: the label most workers chose (a tie goes to the label answered first);
  confidence = its share of the votes;
* multi-label classification: every label more than half the workers chose (any one worker's,
  when one labels each object), each with its share as confidence;
* bounding boxes: the boxes are clustered across workers (same label, intersection over union at
  least 0.5, at most one box of each worker per cluster); a cluster that at least half the workers
  drew becomes one box, the mean of its boxes, with the share of workers as its confidence;
* named entities: the spans (start, end, label) more than half the workers marked.

LIMITATIONS: AWS weighs workers by their estimated accuracy (a Dawid-Skene model); here every worker's
answer weighs the same.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskType:
    key: str  # AWS's name: the suffix of PRE-<key>
    media: str  # "image" (the manifest's source-ref) or "text" (its source)
    answer: str  # "class", "classes", "boxes" or "spans"
    output_type: str  # the ``type`` in the output manifest's metadata
    title: str


TASK_TYPES = {
    t.key: t
    for t in (
        TaskType("ImageMultiClass", "image", "class", "groundtruth/image-classification", "Image classification"),
        TaskType(
            "ImageMultiClassMultiLabel",
            "image",
            "classes",
            "groundtruth/image-classification-multilabel",
            "Image classification (multi-label)",
        ),
        TaskType("BoundingBox", "image", "boxes", "groundtruth/object-detection", "Bounding box"),
        TaskType("TextMultiClass", "text", "class", "groundtruth/text-classification", "Text classification"),
        TaskType(
            "TextMultiClassMultiLabel",
            "text",
            "classes",
            "groundtruth/text-classification-multilabel",
            "Text classification (multi-label)",
        ),
        TaskType("NamedEntityRecognition", "text", "spans", "groundtruth/text-span", "Named entity recognition"),
    )
}
# LabelingJobAlgorithmSpecificationArn's suffix -> the task types it labels automatically.
AUTO_LABELING = {"text-classification": ("TextMultiClass",), "image-classification": ("ImageMultiClass",)}
_LAMBDA = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:(PRE|ACS)-([A-Za-z]+)$")


def supported() -> str:
    return ", ".join(f"PRE-{k}" for k in TASK_TYPES)


def from_config(human_task: Mapping[str, Any]) -> TaskType:
    """The task type a HumanTaskConfig names; ValueError with what to give instead."""
    arns = [human_task.get("PreHumanTaskLambdaArn") or ""]
    arns.append((human_task.get("AnnotationConsolidationConfig") or {}).get("AnnotationConsolidationLambdaArn") or "")
    keys = set()
    for arn in filter(None, arns):
        m = _LAMBDA.match(arn)
        if m is None or m.group(2) not in TASK_TYPES:
            raise ValueError(
                f"{arn} is not the Lambda function of a built-in task type that OpenSage runs; custom pre-annotation "
                "and consolidation Lambda functions cannot run here. Use one of the built-in task types: "
                f"{supported()} "
                "(and the ACS- function of the same type)."
            )
        keys.add(m.group(2))
    if not keys:
        raise ValueError(f"HumanTaskConfig needs PreHumanTaskLambdaArn naming a built-in task type: {supported()}.")
    if len(keys) > 1:
        raise ValueError(
            f"PreHumanTaskLambdaArn and AnnotationConsolidationLambdaArn name different task types: {keys}."
        )
    return TASK_TYPES[keys.pop()]


def categories(document: Any) -> list[str]:
    """The labels of a label category configuration file (``{"labels": [{"label": ...}, ...]}``)."""
    labels = document.get("labels") if isinstance(document, dict) else document
    if not isinstance(labels, list) or not labels:
        raise ValueError('a label category configuration file is JSON with "labels": [{"label": "..."}, ...]')
    names = [str(x.get("label") if isinstance(x, dict) else x) for x in labels]
    if any(not n or n == "None" for n in names) or len(set(names)) != len(names):
        raise ValueError("every label of the label category configuration needs a name of its own")
    return names


def instructions(template: str) -> dict[str, str]:
    """What a worker task template (Crowd HTML Elements) tells workers, as plain text: its header and
    short and full instructions."""

    def text(tag: str) -> str:
        m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", template, re.S | re.I)
        if m is None:
            return ""
        plain = re.sub(r"<[^>]+>", " ", m.group(1))
        return html.unescape(re.sub(r"\s+", " ", plain)).strip()

    header = re.search(r'\bheader\s*=\s*"([^"]*)"', template)
    return {
        "header": html.unescape(header.group(1)).strip() if header else "",
        "short": text("short-instructions"),
        "full": text("full-instructions"),
    }


def check_answer(task: TaskType, answer: Any, labels: Sequence[str], text: str = "") -> dict[str, Any]:
    """A worker's answer in its normal form; ValueError when it does not fit the task."""
    if not isinstance(answer, dict):
        raise ValueError("the answer is a JSON object")
    if task.answer == "class":
        if answer.get("label") not in labels:
            raise ValueError(f"choose one of the labels: {', '.join(labels)}")
        return {"label": answer["label"]}
    if task.answer == "classes":
        chosen = answer.get("labels")
        if not isinstance(chosen, list) or any(c not in labels for c in chosen) or len(set(chosen)) != len(chosen):
            raise ValueError(f"choose labels among: {', '.join(labels)}")
        return {"labels": [c for c in labels if c in chosen]}
    if task.answer == "boxes":
        size = answer.get("image") or {}
        boxes = []
        for b in answer.get("boxes") or []:
            if b.get("label") not in labels:
                raise ValueError(f"each box needs one of the labels: {', '.join(labels)}")
            left, top, width, height = (int(round(float(b[k]))) for k in ("left", "top", "width", "height"))
            if width <= 0 or height <= 0 or left < 0 or top < 0:
                raise ValueError("a box needs a positive width and height inside the image")
            boxes.append({"label": b["label"], "left": left, "top": top, "width": width, "height": height})
        image = {"width": int(size.get("width") or 0), "height": int(size.get("height") or 0), "depth": 3}
        return {"boxes": boxes, "image": image}
    spans = []
    for e in answer.get("entities") or []:
        start, end = int(e["startOffset"]), int(e["endOffset"])
        if e.get("label") not in labels:
            raise ValueError(f"each entity needs one of the labels: {', '.join(labels)}")
        if not 0 <= start < end <= len(text):
            raise ValueError("an entity is a span of the text (startOffset < endOffset, within the text)")
        spans.append({"label": e["label"], "startOffset": start, "endOffset": end})
    return {"entities": sorted(spans, key=lambda s: (s["startOffset"], s["endOffset"], s["label"]))}


def _iou(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    x1, y1 = max(a["left"], b["left"]), max(a["top"], b["top"])
    x2 = min(a["left"] + a["width"], b["left"] + b["width"])
    y2 = min(a["top"] + a["height"], b["top"] + b["height"])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def consolidate(task: TaskType, answers: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[Any, dict]:
    """The label of one object from its workers' answers, and the metadata that goes with it (without
    the job name, dates and ``human-annotated``)."""
    n = len(answers)
    if task.answer == "class":
        votes = Counter(a["label"] for a in answers)
        first = {a["label"]: i for i, a in reversed(list(enumerate(answers)))}
        winner = max(votes, key=lambda label: (votes[label], -first[label]))
        return labels.index(winner), {"class-name": winner, "confidence": round(votes[winner] / n, 2)}
    if task.answer == "classes":
        votes = Counter(label for a in answers for label in a["labels"])
        kept = [label for label in labels if votes[label] * 2 > n or (n == 1 and votes[label])]
        ids = [labels.index(label) for label in kept]
        return ids, {
            "class-map": {str(labels.index(label)): label for label in kept},
            "confidence-map": {str(labels.index(label)): round(votes[label] / n, 2) for label in kept},
        }
    if task.answer == "boxes":
        clusters: list[list[tuple[int, dict]]] = []
        for worker, a in enumerate(answers):
            for box in a["boxes"]:
                best = None
                for cluster in clusters:
                    if cluster[0][1]["label"] != box["label"] or any(w == worker for w, _ in cluster):
                        continue
                    overlap = max(_iou(box, other) for _, other in cluster)
                    if overlap >= 0.5 and (best is None or overlap > best[0]):
                        best = (overlap, cluster)
                if best is None:
                    clusters.append([(worker, box)])
                else:
                    best[1].append((worker, box))
        kept_boxes, objects = [], []
        for cluster in clusters:
            if len(cluster) * 2 < n:
                continue
            boxes = [b for _, b in cluster]
            mean = {k: int(round(sum(b[k] for b in boxes) / len(boxes))) for k in ("left", "top", "width", "height")}
            kept_boxes.append({"class_id": labels.index(boxes[0]["label"]), **mean})
            objects.append({"confidence": round(len(cluster) / n, 2)})
        image = max((a.get("image") or {} for a in answers), key=lambda i: i.get("width", 0))
        used = sorted({b["class_id"] for b in kept_boxes})
        value = {"image_size": [image], "annotations": kept_boxes}
        return value, {"objects": objects, "class-map": {str(i): labels[i] for i in used}}
    votes = Counter((e["startOffset"], e["endOffset"], e["label"]) for a in answers for e in a["entities"])
    kept_spans = sorted(span for span, count in votes.items() if count * 2 > n or n == 1)
    spans: dict[str, Any] = {
        "annotations": {
            "entities": [{"endOffset": e, "startOffset": s, "label": label} for s, e, label in kept_spans],
            "labels": [{"label": label} for label in labels],
        }
    }
    return spans, {"entities": [{"confidence": round(votes[span] / n, 2)} for span in kept_spans]}


def creation_date(when: dt.datetime) -> str:
    """The output manifest's date form: ``2018-10-18T22:18:13.527256`` (UTC, no zone)."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def output_line(
    line: Mapping[str, Any],
    attribute: str,
    value: Any,
    metadata: Mapping[str, Any],
    *,
    task: TaskType,
    job_name: str,
    human: bool,
    when: dt.datetime,
) -> dict[str, Any]:
    """One line of the output manifest: the input line plus ``<attribute>`` and ``<attribute>-metadata``."""
    meta = {
        **metadata,
        "type": task.output_type,
        "job-name": f"labeling-job/{job_name}",
        "human-annotated": "yes" if human else "no",
        "creation-date": creation_date(when),
    }
    return {**line, attribute: value, f"{attribute}-metadata": meta}
