"""Protocol plugins, one sub-package per protocol family. Found through the registry."""
