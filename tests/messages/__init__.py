"""Messages, the registry, envelopes, ids and the codec."""
