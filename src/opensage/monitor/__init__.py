"""Model Monitor: the data-quality analyzer image, monitoring schedules and their executions.

* :mod:`.analyzer` is the ``sagemaker-model-monitor-analyzer`` image's entry point (``python -m
  opensage.monitor``): with the container's environment variables it writes ``statistics.json`` and
  ``constraints.json`` for a baseline dataset, or ``statistics.json`` and ``constraint_violations.json``
  for the captured data of a time window (:mod:`.datasets`, :mod:`.statistics`, :mod:`.checks`);
* :mod:`.schedules` parses schedule expressions and analysis windows;
* :mod:`.scheduler` fires schedules on time (and after a restart) and runs each monitoring execution
  as a processing job, then records its status and publishes drift metrics to CloudWatch.
"""

from __future__ import annotations

STATISTICS_FILE = "statistics.json"
CONSTRAINTS_FILE = "constraints.json"
VIOLATIONS_FILE = "constraint_violations.json"
DRIFT_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
DRIFT_METRIC_PREFIX = "feature_baseline_drift_"
