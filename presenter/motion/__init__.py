"""Motion: speech -> mouth parameters / mesh offsets (baselines, visemes, SyncFormer)."""
