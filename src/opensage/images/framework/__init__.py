"""Framework images: users' own training and inference code, as SageMaker's framework containers run it.

Training runs through :mod:`.toolkit` (``python -m opensage.images.framework train``); serving
through :mod:`.inference` with one module of defaults per framework (:mod:`.sklearn`,
:mod:`.pytorch`, :mod:`.xgboost`, :mod:`.python`).
"""
