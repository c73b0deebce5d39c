"""Renderers: mouth motion + avatar pack -> frames (baseline warp renderer now, the generator later)."""
