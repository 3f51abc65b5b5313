"""Ground Truth's built-in task types: answers checked, consolidated as the docstring says, the output line's form;
and automated labeling's confidence threshold and text features."""

from __future__ import annotations

import datetime as dt

import pytest

from opensage.labeling import autolabel, tasktypes

T = tasktypes.TASK_TYPES
PRE = "arn:aws:lambda:us-east-1:432418664414:function:PRE-{}"


def test_the_task_type_comes_from_the_lambda_arns() -> None:
    assert tasktypes.from_config({"PreHumanTaskLambdaArn": PRE.format("BoundingBox")}).key == "BoundingBox"
    with pytest.raises(ValueError, match="custom pre-annotation"):
        tasktypes.from_config({"PreHumanTaskLambdaArn": "arn:aws:lambda:us-east-1:111122223333:function:mine"})
    consolidation = {"AnnotationConsolidationLambdaArn": PRE.format("BoundingBox")}
    mixed = {"PreHumanTaskLambdaArn": PRE.format("TextMultiClass"), "AnnotationConsolidationConfig": consolidation}
    with pytest.raises(ValueError, match="different task types"):
        tasktypes.from_config(mixed)


def test_single_label_votes_and_ties() -> None:
    labels = ["cat", "dog", "bird"]
    answers = [{"label": "dog"}, {"label": "cat"}, {"label": "dog"}]
    value, meta = tasktypes.consolidate(T["ImageMultiClass"], answers, labels)
    assert value == 1 and meta == {"class-name": "dog", "confidence": 0.67}
    value, meta = tasktypes.consolidate(T["ImageMultiClass"], [{"label": "bird"}, {"label": "cat"}], labels)
    assert value == 2 and meta["confidence"] == 0.5  # a tie: the first answer's label


def test_multi_label_keeps_what_most_workers_chose() -> None:
    labels = ["a", "b", "c"]
    answers = [{"labels": ["a", "b"]}, {"labels": ["a"]}, {"labels": ["a", "c", "b"]}]
    value, meta = tasktypes.consolidate(T["TextMultiClassMultiLabel"], answers, labels)
    assert value == [0, 1] and meta["class-map"] == {"0": "a", "1": "b"}
    assert meta["confidence-map"] == {"0": 1.0, "1": 0.67}


def test_boxes_cluster_across_workers() -> None:
    labels = ["cat", "dog"]
    image = {"width": 100, "height": 80, "depth": 3}
    one = {"boxes": [{"label": "cat", "left": 10, "top": 10, "width": 20, "height": 20},
                     {"label": "dog", "left": 60, "top": 40, "width": 10, "height": 10}], "image": image}
    two = {"boxes": [{"label": "cat", "left": 12, "top": 10, "width": 20, "height": 22}], "image": image}
    three = {"boxes": [{"label": "dog", "left": 10, "top": 10, "width": 20, "height": 20}], "image": image}  # fmt: skip
    value, meta = tasktypes.consolidate(T["BoundingBox"], [one, two, three], labels)
    assert value["annotations"] == [{"class_id": 0, "left": 11, "top": 10, "width": 20, "height": 21}]
    assert meta == {"objects": [{"confidence": 0.67}], "class-map": {"0": "cat"}}
    assert value["image_size"] == [image]


def test_answers_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        tasktypes.check_answer(T["TextMultiClass"], {"label": "x"}, ["a", "b"])
    with pytest.raises(ValueError, match="span of the text"):
        span = {"label": "a", "startOffset": 2, "endOffset": 9}
        tasktypes.check_answer(T["NamedEntityRecognition"], {"entities": [span]}, ["a"], "short")
    with pytest.raises(ValueError, match="positive width"):
        box = {"label": "a", "left": 0, "top": 0, "width": 0, "height": 3}
        tasktypes.check_answer(T["BoundingBox"], {"boxes": [box]}, ["a"])


def test_output_line_and_instructions() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=dt.UTC)
    line = tasktypes.output_line({"source": "hi"}, "sentiment", 1, {"class-name": "b", "confidence": 0.9},
                                 task=T["TextMultiClass"], job_name="j", human=False, when=when)  # fmt: skip
    assert line == {"source": "hi", "sentiment": 1, "sentiment-metadata": {
        "class-name": "b", "confidence": 0.9, "type": "groundtruth/text-classification", "job-name": "labeling-job/j",
        "human-annotated": "no", "creation-date": "2026-01-02T03:04:05.000600"}}  # fmt: skip
    guide = tasktypes.instructions('<crowd-classifier header="Pick &amp; go"><short-instructions><p>Be <b>quick</b></p>'
                                   "</short-instructions></crowd-classifier>")  # fmt: skip
    assert guide == {"header": "Pick & go", "short": "Be quick", "full": ""}


def test_the_threshold_keeps_the_target_accuracy() -> None:
    confidences = [0.99, 0.97, 0.95, 0.9, 0.8, 0.6]
    right = [True, True, True, True, False, False]
    assert autolabel.threshold(confidences, right) == 0.9
    assert autolabel.threshold([0.9, 0.8], [False, True]) is None
    assert autolabel.features("Good good bad") == autolabel.features("bad GOOD good")
    assert len(autolabel.features("")) == autolabel.FEATURES
