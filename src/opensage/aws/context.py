"""What a provider knows about the request it serves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    service: str
    operation: str
    region: str
    account_id: str
    request_id: str
    access_key_id: str
    principal_arn: str
    user_id: str
    received: float = 0.0  # time.perf_counter() when the request arrived

    def arn(self, service: str, resource: str) -> str:
        """An ARN in this request's partition, region and account (IAM ARNs carry no region)."""
        region = "" if service in ("iam", "sts") else self.region
        return f"arn:aws:{service}:{region}:{self.account_id}:{resource}"
