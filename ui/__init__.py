"""Qt dialogs of the plugin (GUI thread only; never used by Processing algorithms)."""
