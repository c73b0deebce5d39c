"""Offline tools: dubbing and video-driven lip sync (`lipsync`, `batch`, `swap` on `faces` and `media`),
and measuring what the presenter shows (the phonetic lip-sync judge, recorded calls)."""
