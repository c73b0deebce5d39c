"""Presenter as the face of voice-agent frameworks (optional extras: `pip install 'presenter[pipecat]'`)."""
