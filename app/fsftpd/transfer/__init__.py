"""The data plane: data channels, copy loops and throttles."""
