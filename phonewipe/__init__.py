"""phonewipe: erase phones over USB, prove it by sampling storage, sign certificates.

One import namespace over the repository's folders (see pyproject.toml, package-dir):
``phonewipe.erase`` (core), ``phonewipe.protocols`` (plugins, found through entry points),
``phonewipe.certificates``, ``phonewipe.fixtures`` (emulated handsets' data). The modules
here are the application layer above them: the command line, the demo, the station
commands and batch reports; the core never imports them.
"""
