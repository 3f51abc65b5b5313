"""SageMaker managed MLflow tracking servers: one real ``mlflow server`` process per tracking server.

:mod:`.engine` supervises the processes and keeps each server's status; :mod:`.front` is the HTTP
side (the MLflow REST API for the ``sagemaker-mlflow`` client plugin, SigV4-checked and routed by the
tracking server's ARN, and the UI behind presigned URLs); :mod:`.tokens` signs those URLs.
"""

MLFLOW_PREFIX = "/_opensage/mlflow"  # every path of the front; ``opensage env`` points the plugin here
