"""Training data: corpus format, synthetic speech and talking heads, real-video ingestion."""
