"""Expected failures. Each carries one line an operator can act on; the CLI prints it
without a traceback and exits with the error's code."""
from __future__ import annotations


class PhonewipeError(Exception):
    """An expected failure: bad input, missing device, locked phone, corrupt file..."""

    exit_code = 2

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def line(self) -> str:
        return f"{self.message} — {self.advice}" if self.advice else self.message


class UsageError(PhonewipeError):
    exit_code = 2


class DeviceNotFound(PhonewipeError):
    exit_code = 3


class DeviceGone(PhonewipeError):
    """The device disappeared (cable pulled, reboot, crash) in the middle of an operation."""

    exit_code = 4


class ProtocolError(PhonewipeError):
    """The device sent something the protocol does not allow."""

    exit_code = 4


class DeviceCommandFailed(PhonewipeError):
    """The device answered, but refused or failed a command."""

    exit_code = 4


class MediumUnreachable(DeviceCommandFailed):
    """The device allows neither cache invalidation nor direct reads: what a read-back
    returns could come from RAM that still holds what was just written."""


class ConfigError(PhonewipeError):
    exit_code = 2


class KeyMissing(PhonewipeError):
    exit_code = 5


class CertificateInvalid(PhonewipeError):
    exit_code = 6


class AuditBroken(PhonewipeError):
    exit_code = 7


class OutputError(PhonewipeError):
    """The output directory cannot be written (permissions, full disk)."""

    exit_code = 8
