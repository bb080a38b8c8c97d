"""The container appliance: settings, users, logging, metrics and health around the engine."""
