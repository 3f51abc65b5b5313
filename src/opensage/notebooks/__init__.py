"""SageMaker notebook instances: one real JupyterLab server per InService instance.

:mod:`.layout` names every path and variable an instance sees (its volume at
``/home/ec2-user/SageMaker``, ``/opt/ml/metadata/resource-metadata.json``, the client files that point
the SDK at this platform); :mod:`.engine` runs the lifecycle scripts, clones the code repositories and
supervises the JupyterLab processes on the compute backend; :mod:`.front` is the HTTP and websocket
proxy under :data:`NOTEBOOK_PREFIX` that a presigned URL signs the browser into.
"""

NOTEBOOK_PREFIX = "/_opensage/notebooks"  # every path of the front; JupyterLab's base_url is <prefix>/<name>/
