"""What each operation requires: the claim the RBAC test checks against domain/rbac.MATRIX.

The data layer (application/graph_queries.py) enforces these; this table states them per GraphQL field
so that tests/integration/test_graphql_rbac.py can run every operation as every role, and fails for
any mutation, query or subscription field that is missing here. `None`: any authenticated caller.
"""

from __future__ import annotations

REQUIRES: dict[str, str | None] = {
    # queries
    "usageTimeseries": "usage.read",
    "usageSummary": "usage.read",
    "costReport": "costs.read",
    "ledgerEntries": "ledger.read",
    "checkpoints": "proofs.read",
    "inclusionProof": "proofs.read",
    "consistencyProof": "proofs.read",
    "projections": "projections.read",
    "tenant": "tenant.read",
    "apiKeys": "apikeys.read",
    "deployments": "deployments.read",
    "recordingMode": "deployments.read",
    "me": None,
    "inferences": "costs.read",  # each row carries its cost (application/graph_queries.INFERENCE_LOG_PERMISSION)
    "inference": "costs.read",
    "users": "users.read",
    "roles": None,
    "ssoProviders": "sso.read",
    # mutations
    "createTenant": "tenants.create",
    "createApiKey": "apikeys.write",
    "revokeApiKey": "apikeys.write",
    "configureDeployment": "deployments.write",
    "removeDeployment": "deployments.write",
    "setRecordingMode": "deployments.write",
    "inviteUser": "users.write",  # inviting an owner also needs owners.write
    "setPassword": None,  # the invitation token, or the signed-in user itself, is the credential
    "grantRole": "users.write",  # granting owner also needs owners.write
    "revokeRole": "users.write",
    "deactivateUser": "users.write",
    "startNexusRun": "inference.run",
    "configureSsoProvider": "sso.write",
    "removeSsoProvider": "sso.write",
    # subscriptions
    "events": "ledger.read",
    "inferenceLog": "costs.read",
    "metrics": "usage.read",
    "nexusRun": "costs.read",  # a run's events carry its inferences' costs, as the inference log does
}
