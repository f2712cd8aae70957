#!/bin/sh
# One-shot setup of the Temporal namespace agentid (docker-compose.yaml, service "temporal-setup", on
# the temporalio/admin-tools image): the namespace and the custom search attributes the lifecycle
# workflows set, so that approvers can filter runs in the Temporal UI (docs/architecture.md, "Temporal").
# Idempotent: it only creates what is missing.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${AGENTID_NAMESPACE:-agentid}"
RETENTION="${AGENTID_NAMESPACE_RETENTION:-720h}"
SEARCH_ATTRIBUTES="AgentId Tenant RiskTier Stage"

attempt=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "temporal-setup: Temporal at $ADDRESS is not healthy after 2 minutes" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "temporal-setup: namespace $NAMESPACE exists"
else
  temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
  echo "temporal-setup: created namespace $NAMESPACE (retention $RETENTION)"
fi

# A namespace just created can take a moment to be visible to every frontend call.
attempt=0
until temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE" >/tmp/attributes 2>/dev/null; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "temporal-setup: cannot list search attributes of $NAMESPACE" >&2
    exit 1
  fi
  sleep 2
done

for name in $SEARCH_ATTRIBUTES; do
  if grep -qw "$name" /tmp/attributes; then
    echo "temporal-setup: search attribute $name exists"
    continue
  fi
  temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
    --name "$name" --type Keyword
  echo "temporal-setup: created search attribute $name (Keyword)"
done
