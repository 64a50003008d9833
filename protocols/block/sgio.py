"""Commands to a disk past the block layer: SCSI (and ATA through a SCSI/ATA translation
bridge) with Linux's SG_IO ioctl on the block device, NVMe admin commands with
NVME_IOCTL_ADMIN_CMD. ctypes structures as <scsi/sg.h> and <linux/nvme_ioctl.h> lay them
out; only commands that read are sent from here. A device that takes no such command (a
loop device, virtio) fails the ioctl: `PassthroughError` says so in words."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from dataclasses import dataclass

from .passthrough import parse_sense

SG_IO = 0x2285
SG_INTERFACE_ID = ord("S")
SG_DXFER_FROM_DEV = -3
SENSE_MAX = 32
NVME_IOCTL_ADMIN_CMD = 0xC0484E41  # _IOWR('N', 0x41, struct nvme_admin_cmd)
TIMEOUT_MS = 5000  # an identify or a report answers at once; a hung bridge must not hang us
GOOD, CHECK_CONDITION = 0x00, 0x02
DRIVER_OK, DRIVER_SENSE = 0x00, 0x08  # driver_status: sense data came with the status


class PassthroughError(Exception):
    """The device refused the command, or its answer was not good: ``str`` in words."""


class NoPassthrough(PassthroughError):
    """The ioctl itself failed: the device takes no such commands (a loop device, virtio)."""


class SgIoHdr(ctypes.Structure):
    _fields_ = [("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int),
                ("cmd_len", ctypes.c_ubyte), ("mx_sb_len", ctypes.c_ubyte),
                ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
                ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p),
                ("sbp", ctypes.c_void_p), ("timeout", ctypes.c_uint),
                ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
                ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte),
                ("masked_status", ctypes.c_ubyte), ("msg_status", ctypes.c_ubyte),
                ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
                ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int),
                ("duration", ctypes.c_uint), ("info", ctypes.c_uint)]


class NvmeAdminCmd(ctypes.Structure):
    _fields_ = [("opcode", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("rsvd1", ctypes.c_uint16), ("nsid", ctypes.c_uint32),
                ("cdw2", ctypes.c_uint32), ("cdw3", ctypes.c_uint32),
                ("metadata", ctypes.c_uint64), ("addr", ctypes.c_uint64),
                ("metadata_len", ctypes.c_uint32), ("data_len", ctypes.c_uint32),
                ("cdw10", ctypes.c_uint32), ("cdw11", ctypes.c_uint32),
                ("cdw12", ctypes.c_uint32), ("cdw13", ctypes.c_uint32),
                ("cdw14", ctypes.c_uint32), ("cdw15", ctypes.c_uint32),
                ("timeout_ms", ctypes.c_uint32), ("result", ctypes.c_uint32)]


@dataclass(frozen=True)
class ScsiReply:
    data: bytes  # what the device transferred (dxfer_len minus the residue)


def _ioctl_error(exc: OSError, what: str, ioctl: str) -> NoPassthrough:
    """In words, after the device node: "/dev/loop0 takes no SCSI commands (SG_IO: ...)"."""
    why = f"({ioctl}: {exc.strerror})"
    if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
        return NoPassthrough(f"takes no {what} {why}")
    if exc.errno in (errno.EPERM, errno.EACCES):
        return NoPassthrough(f"was not sent {what}: run as root {why}")
    return NoPassthrough(f"did not take {what} {why}")


def scsi_read(fd: int, cdb: bytes, length: int) -> ScsiReply:
    """Send a SCSI command that reads ``length`` bytes; PassthroughError unless GOOD."""
    data = ctypes.create_string_buffer(length)
    command = ctypes.create_string_buffer(cdb, len(cdb))
    sense = ctypes.create_string_buffer(SENSE_MAX)
    hdr = SgIoHdr(interface_id=SG_INTERFACE_ID, dxfer_direction=SG_DXFER_FROM_DEV,
                  cmd_len=len(cdb), mx_sb_len=SENSE_MAX, dxfer_len=length,
                  dxferp=ctypes.addressof(data), cmdp=ctypes.addressof(command),
                  sbp=ctypes.addressof(sense), timeout=TIMEOUT_MS)
    try:
        fcntl.ioctl(fd, SG_IO, hdr)
    except OSError as exc:
        raise _ioctl_error(exc, "SCSI commands", "SG_IO") from exc
    if hdr.host_status or hdr.driver_status & 0x0F not in (DRIVER_OK, DRIVER_SENSE):
        raise PassthroughError(f"the command did not reach the device (host status "
                               f"0x{hdr.host_status:x}, driver status 0x{hdr.driver_status:x})")
    if hdr.status == CHECK_CONDITION:
        found = parse_sense(sense.raw[:min(hdr.sb_len_wr, SENSE_MAX)])
        raise PassthroughError(found.describe() if found else "CHECK CONDITION, no sense data")
    if hdr.status != GOOD:
        raise PassthroughError(f"SCSI status 0x{hdr.status:x}")
    got = max(0, min(length, length - hdr.resid))
    return ScsiReply(data.raw[:got])


def nvme_identify_controller(fd: int, length: int) -> bytes:
    """Identify Controller (admin opcode 0x06, CNS 1): ``length`` (4096) bytes."""
    data = ctypes.create_string_buffer(length)
    cmd = NvmeAdminCmd(opcode=0x06, addr=ctypes.addressof(data), data_len=length, cdw10=1,
                       timeout_ms=TIMEOUT_MS)
    try:
        status = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd)
    except OSError as exc:
        raise _ioctl_error(exc, "NVMe admin commands", "NVME_IOCTL_ADMIN_CMD") from exc
    if status:
        raise PassthroughError(f"NVMe status 0x{status:x}")
    return data.raw


def open_for_query(node: str) -> int:
    """The device opened to ask it questions (no O_EXCL: nothing is written through it)."""
    return os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
