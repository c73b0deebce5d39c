"""The live server: aiohttp app, WebRTC signalling, tracks, metrics."""
