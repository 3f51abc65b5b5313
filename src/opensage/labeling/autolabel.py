"""Automated data labeling: a built-in algorithm trained on the human labels takes the confident rest.

As Ground Truth does it (the job's ``LabelingJobAlgorithmsConfig``, text classification here):

1. humans first label a validation set (:data:`VALIDATION_SHARE` of the objects, at least
   :data:`MIN_VALIDATION`) and a first training batch (:data:`BATCH_SHARE`, at least :data:`MIN_BATCH`);
2. a round then trains the built-in XGBoost (``multi:softprob``) on the human labels outside the
   validation set, as an ordinary training job (``<job>-al-train-<round>``), on hashed bag-of-words
   features of the texts or, for images, their pixels scaled down to 8 x 8 and their colour
   histograms; makes it a model (``<job>-al-model-<round>``) and runs a batch transform job over the
   validation set and the objects no one has labeled yet;
3. the confidence threshold is the lowest one at which the model's labels of the validation set
   above it are at least :data:`TARGET_ACCURACY` right; every unlabeled object the model labels
   with at least that confidence is labeled by the machine (``human-annotated: no``);
4. the next batch goes to humans, and the next round starts once they have labeled it, until every
   object has a label. The last round's model is the job's ``FinalActiveLearningModelArn``.

The jobs' files are under ``<S3OutputPath>/<job>/activelearning/<round>/``.

LIMITATIONS: single-label text and image classification only; the image features suit images told
apart by colour and layout, not by fine detail (AWS fine-tunes a ResNet); the job needs at least :data:`MIN_OBJECTS`
objects for it (AWS asks for 1,250).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from opensage.labeling import jobs as lj
from opensage.store.entities import Resource

VALIDATION_SHARE, MIN_VALIDATION = 0.10, 10
BATCH_SHARE, MIN_BATCH = 0.20, 20
MIN_OBJECTS = 100
SUPPORTED = ("text-classification", "image-classification")  # LabelingJobAlgorithmSpecificationArn suffixes
THUMBNAIL = 8  # an image's features: its pixels at THUMBNAIL x THUMBNAIL (RGB), and a histogram of each channel
BINS = 8
TARGET_ACCURACY = 0.95
FEATURES = 512  # hashed word buckets
IMAGE = "683313688378.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:1.7-1"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def validation_size(total: int) -> int:
    return max(MIN_VALIDATION, math.ceil(VALIDATION_SHARE * total))


def batch_size(total: int) -> int:
    return max(MIN_BATCH, math.ceil(BATCH_SHARE * total))


def features(text: str) -> list[float]:
    """Hashed bag of words: log(1 + count) per bucket (CRC-32 of the lower-cased word)."""
    counts = [0] * FEATURES
    for word in _WORD.findall(text.lower()):
        counts[zlib.crc32(word.encode()) % FEATURES] += 1
    return [round(math.log1p(c), 4) for c in counts]


def image_features(data: bytes) -> list[float]:
    """An image as numbers: its RGB pixels scaled down to THUMBNAIL x THUMBNAIL, and BINS-bin channel histograms."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    small = image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    pixels = [round(v / 255, 4) for v in small.tobytes()]
    histogram = image.histogram()  # 256 counts per channel
    total = image.width * image.height
    step = 256 // BINS
    bins = [round(sum(histogram[c * 256 + b * step : c * 256 + (b + 1) * step]) / total, 4)
            for c in range(3) for b in range(BINS)]  # fmt: skip
    return pixels + bins


def threshold(confidences: Sequence[float], right: Sequence[bool], target: float = TARGET_ACCURACY) -> float | None:
    """The lowest confidence at which the predictions at or above it are at least ``target`` right."""
    best = None
    for t in sorted(set(confidences), reverse=True):
        kept = [ok for c, ok in zip(confidences, right, strict=True) if c >= t]
        if sum(kept) >= target * len(kept):
            best = t
        else:
            break
    return best


def _csv(rows: Sequence[Sequence[float]]) -> bytes:
    return "".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows).encode()


class _Stopped(Exception):
    """The labeling job was asked to stop in the middle of a round."""


class AutoLabeler:
    """Runs the rounds of a job's automated labeling through the SageMaker provider's own operations."""

    def __init__(self, provider: Any, engine: lj.LabelingJobs, poll_s: float = 0.5) -> None:
        self.p = provider
        self.engine = engine
        self.poll_s = poll_s

    def first_release(self, total: int) -> int:
        """How many objects go to humans first: all of them when there are too few to learn from."""
        return total if total < MIN_OBJECTS else validation_size(total) + batch_size(total)

    async def turn(self, job: Resource) -> None:
        """Run a round if the human batch is done and objects are left; then hand out the next batch."""
        counts = await asyncio.to_thread(self.engine.store.count_resources, lj.ITEM_KIND, parent_arn=job.arn)
        if counts.get(lj.PENDING) or not counts.get(lj.HELD):  # humans are at it, or nothing is held back
            return
        items = await asyncio.to_thread(self.engine.items, job)
        total = len(items)
        waiting = [i for i in items if i.status == lj.PENDING]
        unreleased = [i for i in items if i.status == lj.HELD]
        if waiting or not unreleased:
            return
        validation_n = validation_size(total)
        rounds = int(job.data.get("_AutoRound", 0)) + 1
        labels = job.data["_Labels"]
        validation = [i for i in items if i.data["Order"] < validation_n and i.status == lj.HUMAN]
        training = [i for i in items if i.data["Order"] >= validation_n and i.status == lj.HUMAN]
        if len({i.data["Label"] for i in training}) >= 2 and validation:
            try:
                predicted = await self._predict(job, rounds, labels, training, [*validation, *unreleased])
            except _Stopped:  # StopLabelingJob during the round: the job ends with what humans labeled
                return
            scores = [max(p) for p in predicted[: len(validation)]]
            right = [p.index(max(p)) == i.data["Label"] for p, i in zip(predicted, validation, strict=False)]
            cut = threshold(scores, right)
            if cut is not None:
                taken = [
                    (item, p) for item, p in zip(unreleased, predicted[len(validation) :], strict=True) if max(p) >= cut
                ]
                await asyncio.to_thread(self._machine_label, job, labels, taken)
                unreleased = [i for i in unreleased if i.name not in {t.name for t, _ in taken}]
        batch = unreleased if len(unreleased) <= batch_size(total) * 1.5 else unreleased[: batch_size(total)]
        await asyncio.to_thread(self._release, batch)
        await asyncio.to_thread(self.engine.count, job.name)

        def advance(current: Resource) -> tuple[dict[str, Any], None]:
            return {**current.data, "_AutoRound": rounds}, None

        await asyncio.to_thread(self.engine.store.modify_resource, lj.KIND, job.name, advance, now=self.engine.clock())

    def _machine_label(self, job: Resource, labels: Sequence[str], taken: Sequence[tuple[Resource, list[float]]]):
        now = self.engine.clock()
        for item, p in taken:
            best = p.index(max(p))
            meta = {"class-name": labels[best], "confidence": round(max(p), 2)}

            def label(current: Resource, best: int = best, meta: dict = meta) -> tuple[dict[str, Any], str] | None:
                if current.status != lj.HELD:
                    return None
                return {**current.data, "Label": best, "Metadata": meta, "LabeledAt": now.isoformat()}, lj.MACHINE

            self.engine.store.modify_resource(lj.ITEM_KIND, item.name, label, now=now)

    def _release(self, batch: Sequence[Resource]) -> None:
        for item in batch:
            self.engine.store.modify_resource(
                lj.ITEM_KIND, item.name, lambda c: (c.data, lj.PENDING if c.status == lj.HELD else None),
                now=self.engine.clock(),
            )

    async def _predict(
        self,
        job: Resource,
        rounds: int,
        labels: Sequence[str],
        training: Sequence[Resource],
        scored: Sequence[Resource],
    ) -> list[list[float]]:
        """Train on ``training``, then the class probabilities of each of ``scored``."""
        from opensage.providers.sagemaker.pipeline_steps import request_context

        saved: Mapping[str, str] = job.data["_Context"]
        bucket, _ = lj.split_s3(job.data["OutputConfig"]["S3OutputPath"])
        base = f"{lj._prefix(job)}/activelearning/{rounds}"
        s3 = self.engine.s3
        train_rows = [[i.data["Label"], *await self._features(i)] for i in training]
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=f"{base}/train/train.csv", Body=_csv(train_rows))
        score_rows = [await self._features(i) for i in scored]
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=f"{base}/inference/input.csv", Body=_csv(score_rows))
        stem = job.name[:40]
        train_name, model_name, transform_name = (f"{stem}-al-{what}-{rounds}" for what in ("train", "model", "infer"))
        image = IMAGE.format(region=saved["region"])
        role = job.data["RoleArn"]
        training_request = {
            "TrainingJobName": train_name,
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "RoleArn": role,
            "HyperParameters": {"objective": "multi:softprob", "num_class": str(len(labels)), "num_round": "40",
                                "max_depth": "4", "eta": "0.3", "min_child_weight": "1"},
            "InputDataConfig": [{
                "ChannelName": "train", "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{base}/train/"}},
            }],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{base}/model/"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        }  # fmt: skip
        # Each step is taken once: a restart in the middle of a round finds the jobs it made.
        if not await self._exists("training-job", train_name):
            await self.p.create_training_job(request_context(saved, "CreateTrainingJob"), training_request)
        trained = await self._wait("training-job", train_name, job)
        model_arn = f"arn:aws:sagemaker:{saved['region']}:{saved['account']}:model/{model_name.lower()}"
        if not await self._exists("model", model_name):
            artifacts = trained["ModelArtifacts"]["S3ModelArtifacts"]
            model_request = {"ModelName": model_name, "ExecutionRoleArn": role,
                             "PrimaryContainer": {"Image": image, "ModelDataUrl": artifacts}}  # fmt: skip
            made = await asyncio.to_thread(self.p.create_model, request_context(saved, "CreateModel"), model_request)
            model_arn = made["ModelArn"]
        transform_request = {
            "TransformJobName": transform_name,
            "ModelName": model_name,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                "S3Uri": f"s3://{bucket}/{base}/inference/input.csv"}},
                "ContentType": "text/csv", "SplitType": "Line",
            },
            "TransformOutput": {"S3OutputPath": f"s3://{bucket}/{base}/inference-output/", "AssembleWith": "Line",
                                "Accept": "text/csv"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }  # fmt: skip
        if not await self._exists("transform-job", transform_name):
            await self.p.create_transform_job(request_context(saved, "CreateTransformJob"), transform_request)
        await self._wait("transform-job", transform_name, job)
        body = await asyncio.to_thread(s3.get_object, Bucket=bucket, Key=f"{base}/inference-output/input.csv.out")
        rows = [json.loads(line) for line in body["Body"].read().decode().splitlines() if line.strip()]
        if len(rows) != len(scored):
            raise RuntimeError(f"the inference job {transform_name} answered {len(rows)} lines for {len(scored)}")

        def final(current: Resource) -> tuple[dict[str, Any], None]:
            return {**current.data, "_FinalModelArn": model_arn}, None

        await asyncio.to_thread(self.engine.store.modify_resource, lj.KIND, job.name, final, now=self.engine.clock())
        return [[float(x) for x in (r if isinstance(r, list) else [r])] for r in rows]

    async def _features(self, item: Resource) -> list[float]:
        line = item.data["Line"]
        if "source" in line:
            return features(line["source"])
        bucket, key = lj.split_s3(line["source-ref"])
        try:
            got = await asyncio.to_thread(self.engine.s3.get_object, Bucket=bucket, Key=key)
            return await asyncio.to_thread(image_features, got["Body"].read())
        except Exception as exc:  # the job fails naming the object
            raise lj.JobInputError(f"ClientError: could not read the image {line['source-ref']}: {exc}") from exc

    async def _exists(self, kind: str, name: str) -> bool:
        return await asyncio.to_thread(self.engine.store.get_resource, kind, name) is not None

    async def _wait(self, kind: str, name: str, job: Resource) -> dict[str, Any]:
        from opensage.providers.sagemaker.pipeline_steps import request_context

        while True:
            if self.engine.stopping(job.name):
                ctx = request_context(job.data["_Context"], "Stop")
                with contextlib.suppress(Exception):  # the round's job stops with the labeling job
                    if kind == "training-job":
                        await asyncio.to_thread(self.p.stop_training_job, ctx, {"TrainingJobName": name})
                    else:
                        await asyncio.to_thread(self.p.stop_transform_job, ctx, {"TransformJobName": name})
                raise _Stopped(job.name)
            row = await asyncio.to_thread(self.engine.store.get_resource, kind, name)
            if row is not None and row.status in ("Completed", "Failed", "Stopped"):
                if row.status != "Completed":
                    reason = row.data.get("FailureReason") or row.status
                    raise lj.JobInputError(
                        f"ClientError: the automated labeling job {name} ended {row.status}: {reason}"
                    )
                return row.data
            await asyncio.sleep(self.poll_s)
