"""Provider adapters: a direct pass-through for OpenAI-compatible upstreams, litellm for the rest."""
