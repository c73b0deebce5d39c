"""Audio in: decoding, resampling, voice activity, streaming windows, speech features."""
