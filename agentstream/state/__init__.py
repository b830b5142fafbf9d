"""Redis-held state: session context, request dedupe (later: journal, rate limits, caches)."""
