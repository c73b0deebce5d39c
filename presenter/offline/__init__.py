"""Offline tools: measuring what the presenter shows (the phonetic lip-sync judge, recorded calls)."""
