"""AWS STS: who the caller is.

LIMITATIONS: only GetCallerIdentity; every access key acts as a session of the account's default
SageMaker execution role.
"""

from __future__ import annotations

from typing import Any

from opensage.aws.context import RequestContext


class StsProvider:
    def get_caller_identity(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"UserId": ctx.user_id, "Account": ctx.account_id, "Arn": ctx.principal_arn}
