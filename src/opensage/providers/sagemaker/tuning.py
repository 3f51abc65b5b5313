"""SageMaker hyperparameter tuning operations: Create, Describe, List, ListTrainingJobsFor..., Stop, Delete.

LIMITATIONS: strategies come from Optuna (:mod:`opensage.tuning.strategies`: Bayesian is TPE, not
a Gaussian process); ``Autotune`` keeps the given strategy and turns ``AutoParameters`` into ranges
around their numeric hints (a tenth to ten times, log-scaled); non-numeric hints are refused.
``HyperParameterTuningResourceConfig.InstanceConfigs`` gives every trial its first entry
(``AllocationStrategy`` is accepted and has no effect: one machine). A tuning job past ``MaxRuntimeInSeconds`` stops its
running trials and ends Completed (Failed when no trial reported the objective). Trials are
ordinary training jobs, with that provider's limitations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError, not_found, resource_in_use, validation_error
from opensage.providers.sagemaker.listing import list_page
from opensage.providers.sagemaker.stopping import to_stopping
from opensage.store import tags
from opensage.store.sql import SqlStore
from opensage.tuning import controller, summaries
from opensage.tuning.spec import InvalidTuningJob, from_request

KIND = controller.KIND


def _missing(name: str) -> ServiceError:
    return not_found(f"Amazon SageMaker can't find a tuning job with name {name}")


class TuningOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    tuning: controller.TuningController
    _require_role: Callable[[RequestContext, str], None]
    _check_training_request: Callable[[dict[str, Any]], None]

    async def create_hyper_parameter_tuning_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = from_request(request)
        except InvalidTuningJob as exc:
            raise validation_error(str(exc)) from exc
        for d in spec.definitions:
            self._check_training_request(d.training_request(f"{spec.name}-001-00000000", {}))
            await asyncio.to_thread(self._require_role, ctx, d.document["RoleArn"])
        arn = ctx.arn("sagemaker", f"hyper-parameter-tuning-job/{spec.name.lower()}")
        if request.get("Tags"):  # before the job starts: its training jobs get them too
            await asyncio.to_thread(tags.put_tags, self.store, arn, request["Tags"], self.clock())
        try:
            await self.tuning.create(spec, arn)
        except InvalidTuningJob as exc:
            raise validation_error(str(exc)) from exc
        except AlreadyExists as exc:
            raise resource_in_use(f"Hyperparameter tuning job {spec.name} already exists ({arn}).") from exc
        return {"HyperParameterTuningJobArn": arn}

    def describe_hyper_parameter_tuning_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        row = self.store.get_resource(KIND, name)
        if row is None:
            raise _missing(name)
        return {k: v for k, v in row.data.items() if not k.startswith("_") and k != "Tags"}

    def list_hyper_parameter_tuning_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        paged = {"SortBy": "Name", "SortOrder": "Ascending", **request}  # this operation's defaults
        rows, token = list_page(self.store, KIND, paged)
        out = []
        for r in rows:
            d = r.data
            item = {
                "HyperParameterTuningJobName": r.name,
                "HyperParameterTuningJobArn": r.arn,
                "HyperParameterTuningJobStatus": r.status,
                "Strategy": d["HyperParameterTuningJobConfig"]["Strategy"],
                "CreationTime": d["CreationTime"],
                "TrainingJobStatusCounters": d["TrainingJobStatusCounters"],
                "ObjectiveStatusCounters": d["ObjectiveStatusCounters"],
                "ResourceLimits": d["HyperParameterTuningJobConfig"]["ResourceLimits"],
            }
            for key in ("HyperParameterTuningEndTime", "LastModifiedTime"):
                if d.get(key) is not None:
                    item[key] = d[key]
            out.append(item)
        return {"HyperParameterTuningJobSummaries": out, "NextToken": token}

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        row = self.store.get_resource(KIND, name)
        if row is None:
            raise _missing(name)
        children = self.store.list_resources("training-job", parent_arn=row.arn, status=request.get("StatusEquals"))
        items = summaries.summaries(children, row.data.get("_Trials") or {}, name)
        by = request.get("SortBy", "Name")
        if by == "FinalObjectiveMetricValue":  # jobs without an objective are not listed
            items = [s for s in items if "FinalHyperParameterTuningJobObjectiveMetric" in s]
        items.sort(key=summaries.sort_key(by), reverse=request.get("SortOrder", "Ascending") == "Descending")
        return {"TrainingJobSummaries": items}  # paged by the gateway (MaxResults, NextToken)

    def stop_hyper_parameter_tuning_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        to_stopping(
            self.store,
            self.clock,
            KIND,
            name,
            missing=f"Amazon SageMaker can't find a tuning job with name {name}",
            refused=f"The hyperparameter tuning job {name} is in status {{status}}; only an InProgress job can be "
            "stopped.",
        )
        self.tuning.request_stop(name)
        return {}

    def delete_hyper_parameter_tuning_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        row = self.store.get_resource(KIND, name)
        if row is None:
            raise _missing(name)
        if row.status in controller.RUNNING:
            raise validation_error(
                f"The hyperparameter tuning job {name} is {row.status}; stop it and wait for it to end before "
                "deleting it."
            )
        self.store.delete_resource(KIND, name)
        tags.drop_tags(self.store, row.arn)
        self.tuning.delete_study(name)
        return {}
