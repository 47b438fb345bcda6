"""NATS JetStream: the relay that publishes the ledger, and consumers that feed projections."""
