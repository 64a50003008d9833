"""The EDL plugin's expected failures: one line each, with what to do."""
from __future__ import annotations

from phonewipe.erase.errors import DeviceCommandFailed, DeviceGone, ProtocolError

RECONNECT = ("hold the phone's EDL key combination (or use an EDL cable) to put it back in "
             "Emergency Download mode, then run again")


class EdlTimeout(ProtocolError):
    """The phone did not answer in time."""


class FirehoseNak(DeviceCommandFailed):
    """The programmer refused a command (NAK)."""


class ShortRead(ProtocolError):
    """A read's raw data phase ended before every requested byte came."""


def timeout(address: str, what: str) -> EdlTimeout:
    return EdlTimeout(f"the EDL device {address} did not answer {what}",
                      f"it may have frozen; {RECONNECT}")


def gone(address: str, what: str) -> DeviceGone:
    return DeviceGone(f"the EDL device {address} disconnected {what}",
                      f"check the cable; {RECONNECT}")
