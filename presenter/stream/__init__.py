"""PresenterStream: the per-session pipeline shared by the server, mic mode and agents."""
