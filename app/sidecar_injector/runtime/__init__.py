"""What the edges share: settings, logs, metrics and the protocols they hand each other."""
