"""Multi-host training through XGBoost's collective: a tracker on the first host, every host a worker.

SageMaker's container runs Rabit with the first host (sorted) as master; here the hosts of a job
share one machine, so the platform says where each host listens: ``OPENSAGE_HOST_ADDRESSES``
(``{"algo-1": "127.0.0.1", ...}``) and ``OPENSAGE_TRACKER_PORT``. Ranks follow the order of
``hosts`` in ``resourceconfig.json``, so the first host is rank 0: it prints the evaluation lines
(through the tracker) and saves the model.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from opensage.contract import HOST_ADDRESSES_ENV, TRACKER_PORT_ENV

log = logging.getLogger(__name__)
DEFAULT_TRACKER_PORT = 9099
CONNECT_TIMEOUT_S = 300
# A worker that starts before the master's tracker listens tries again this often. XGBoost's own retries
# back off by seconds (2 s, then 4 s...): a race lost by a few milliseconds cost a job 6 s.
JOIN_RETRY_S = 0.05
LOOPBACK = "127.0.0.1"


# What XGBoost's collective says when a peer went away mid-operation.
_PEER_SIGNS = ("allreduce", "allgather", "broadcast", "Encountered EOF", "Socket error", "collective")


class PeerLost(RuntimeError):
    """Another host of the job failed or stopped; this one cannot go on without it."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """The hosts of a multi-host job, this host among them, and where the tracker listens."""

    hosts: tuple[str, ...]
    current: str
    tracker_address: str
    tracker_port: int

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current)

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    def worker_args(self) -> dict[str, Any]:
        """Arguments of ``xgboost.collective.CommunicatorContext`` for this host."""
        return {
            "dmlc_tracker_uri": self.tracker_address,
            "dmlc_tracker_port": self.tracker_port,
            # zero-padded so that the tracker's sort by task id gives ranks in host order
            "dmlc_task_id": f"{self.rank:04d}-{self.current}",
            "dmlc_retry": 1,  # join() tries again itself, every JOIN_RETRY_S
            "dmlc_timeout": CONNECT_TIMEOUT_S,
        }


def cluster_from(hosts: list[str], current: str, env: Mapping[str, str]) -> Cluster | None:
    """The cluster of a job with several hosts, or ``None`` for single-host training.

    Raises:
        ValueError: the current host is not among the hosts, or the address map is not JSON.
    """
    if len(hosts) < 2:
        return None
    if current not in hosts:
        raise ValueError(f"current_host {current} is not one of the job's hosts {hosts}")
    raw = env.get(HOST_ADDRESSES_ENV) or "{}"
    try:
        addresses = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{HOST_ADDRESSES_ENV} is not a JSON object: {raw[:80]}") from exc
    port = int(env.get(TRACKER_PORT_ENV) or DEFAULT_TRACKER_PORT)
    return Cluster(tuple(hosts), current, str(addresses.get(hosts[0], LOOPBACK)), port)


def join(args: dict[str, Any], timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Initialise XGBoost's communicator, trying again every JOIN_RETRY_S until the tracker answers.

    The attempts that fail while the tracker is not listening yet are not logged (XGBoost warns for each);
    the last one's error is raised once ``timeout`` has passed."""
    import xgboost as xgb

    deadline = time.monotonic() + timeout
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xgb.collective.init(**args)
            return
        except xgb.core.XGBoostError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(JOIN_RETRY_S)


@contextmanager
def collective(cluster: Cluster) -> Iterator[None]:
    """Join the job's collective (starting the tracker on the master) for the duration of the block.

    An exception inside the block is signalled to the other hosts, so that they stop at once
    instead of waiting for this one until their timeout.
    """
    import xgboost as xgb
    from xgboost.tracker import RabitTracker

    tracker = None
    if cluster.is_master:
        tracker = RabitTracker(
            n_workers=len(cluster.hosts),
            host_ip=cluster.tracker_address,
            port=cluster.tracker_port,
            sortby="task",
            timeout=CONNECT_TIMEOUT_S,
        )
        tracker.start()
        log.info(
            "Tracker listening on %s:%d for %d hosts", cluster.tracker_address, cluster.tracker_port, len(cluster.hosts)
        )
    join(cluster.worker_args())
    try:
        log.info("Joined the collective as rank %d of %d", xgb.collective.get_rank(), xgb.collective.get_world_size())
        try:
            yield
        except BaseException as exc:
            with suppress(Exception):  # the collective may already be broken (a peer failed first)
                xgb.collective.signal_error()
            if isinstance(exc, xgb.core.XGBoostError) and any(sign in str(exc) for sign in _PEER_SIGNS):
                raise PeerLost(
                    "Another host of the job failed or stopped, so this one cannot go on: the cause is in that "
                    "host's log and failure reason."
                ) from exc
            raise
    finally:
        xgb.collective.finalize()
    if tracker is not None:
        tracker.wait_for(timeout=60)
