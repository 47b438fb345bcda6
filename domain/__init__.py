"""The pure core of NexusAI: events, ledger format, proofs. Imports nothing outside stdlib, blake3, cryptography."""
