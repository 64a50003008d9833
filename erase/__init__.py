"""phonewipe core: device model, plugin registry, job flow, verification, policy, audit."""

__version__ = "0.1.0"
