"""The built-in IP Insights by the container contract: an entity's usual subnet scores above a stranger's."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import tabular
from opensage.images.ipinsights import metric_definitions
from opensage.images.ipinsights import serve as ip_serve
from opensage.images.ipinsights.train import train
from opensage.images.tabular import Job

pytest.importorskip("torch")
USERS = 60


def _events(rng: np.random.Generator, n: int, own: bool = True) -> list[tuple[str, str]]:
    """(user, address) pairs; each user logs in from a /16 of its own (or, ``own=False``, from another's)."""
    users = rng.integers(0, USERS, n)
    subnets = users if own else (users + rng.integers(1, USERS, n)) % USERS
    return [(f"user-{u}", f"{10 + s}.{s * 3 % 256}.{rng.integers(0, 256)}.{rng.integers(1, 255)}")
            for u, s in zip(users, subnets, strict=True)]


def _csv(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{e},{ip}\n" for e, ip in pairs)


def _job(tmp_path: Path, hps: dict[str, str], train_csv: str, validation_csv: str | None = None) -> Job:
    layout = Layout(tmp_path)
    layout.create()
    channels = {"train": train_csv, **({"validation": validation_csv} if validation_csv else {})}
    for channel, text in channels.items():
        layout.channel_dir(channel).mkdir(parents=True, exist_ok=True)
        (layout.channel_dir(channel) / "events.csv").write_text(text)
    return Job(layout, hps, {c: {"ContentType": "text/csv"} for c in channels})


HPS = {"num_entity_vectors": "200", "vector_dim": "16", "epochs": "15", "mini_batch_size": "500",
       "learning_rate": "0.01"}


def test_usual_addresses_score_above_unusual_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(10)
    job = _job(tmp_path, HPS, _csv(_events(rng, 6000)), _csv(_events(rng, 600)))
    with caplog.at_level(logging.INFO):
        train(job)
    (definition,) = metric_definitions()
    found = re.findall(definition["Regex"], "\n".join(caplog.messages))
    assert len(found) == 15 and float(found[-1]) > 0.9, found
    model = ip_serve.load_model(job.layout.model_dir)
    usual, unusual = _events(rng, 200), _events(rng, 200, own=False)
    body, media = ip_serve.predict(model, _csv(usual + unusual).encode(), "text/csv", "application/json")
    dots = np.array([p["dot_product"] for p in json.loads(body)["predictions"]])
    assert media == "application/json" and dots[:200].mean() > dots[200:].mean() + 1.0
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(np.r_[np.ones(200), np.zeros(200)], dots) > 0.9
    request = {"instances": [{"features": list(usual[0])}, {"data": {"features": {"values": list(usual[0])}}}]}
    verbose, _ = ip_serve.predict(model, json.dumps(request).encode(), "application/json",
                                  "application/json; verbose=True")
    first, second = json.loads(verbose)["predictions"]
    assert first == second and len(first["entity_embedding"]) == 16 == len(first["ip_embedding"])
    assert first["dot_product"] == pytest.approx(float(np.dot(first["entity_embedding"], first["ip_embedding"])),
                                                 rel=1e-4)


@pytest.mark.parametrize(
    ("hps", "text", "says"),
    [
        ({"vector_dim": "8"}, "u,1.2.3.4\n", "'num_entity_vectors' is a required property"),
        ({**HPS, "vector_dim": "2"}, "u,1.2.3.4\n", "2 is less than the minimum of 4"),
        (HPS, "u,1.2.3.4,extra\n", "row 1 has 3 columns"),
        (HPS, "u,1.2.3.4\nv,not-an-ip\n", "'not-an-ip' (row 2) is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], text: str, says: str) -> None:
    with pytest.raises(tabular.ClientError) as caught:
        train(_job(tmp_path, hps, text))
    assert says in str(caught.value)
