"""presenter: a real-time virtual presenter (ReSyncer-style speech-driven face synthesis)."""
__version__ = "0.1.0"
