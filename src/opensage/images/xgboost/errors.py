"""The image's error classes, by who must act: the job's author, or OpenSage."""

from __future__ import annotations


class ClientError(Exception):
    """A mistake in the job's input (hyperparameters, channels, data): the message says what to fix.

    Reported as ``ClientError: <message>`` in ``output/failure``; anything else is an ``AlgorithmError``.
    """
