"""An emulated phone in Emergency Download mode on the core's emulated USB bus: the boot
ROM's Sahara (identity in command mode, then the programmer upload, which accepts any
bytes) and the programmer's Firehose (configure, getstorageinfo, read, program, erase,
nop, power), on the handset's `HandsetStorage` and the LUNs of `emulator_storage`.

It NAKs as real programmers do: an unknown tag, sectors outside the LUN, a raw transfer
larger than the negotiated payload, a memory type it does not have. The profile's
``[edl] quirks`` make a command silent (a timeout), NAK it, log for ever without answering
("chatter"), answer an erase late ("slow"), or cut a read short or send it slowly
("trickle"), report a negative size for LUNs past the first or bury it in deeply nested
JSON (getstorageinfo "negative", "nested"), or agree to a payload of a terabyte (configure
"huge-payload"); ``loader = "endless[-zero|-past-end]"`` asks for the programmer (or for
nothing, or past its end) for ever; the core's faults (lying, unplug, slow, unreadable) act
on userdata as over any protocol.
"""
from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.registry import publish, withdraw
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.emulation.usbbus import DeviceSpec, EmulatedUsbBus, EndpointSpec, InPipe, InterfaceSpec
from phonewipe.erase.errors import ProtocolError

from . import firehose, sahara
from .emulator_storage import Lun, open_luns
from .profile import EdlSpec
from .relay import RelayServer
from .transport import EDL_PID, QUALCOMM_VID, find_devices, usb_address

EP_OUT, EP_IN = 0x01, 0x81
IMAGE_ID = 0x0D  # the programmer ("ENPRG") in Sahara image ids
IMAGE_PIECE = 0x1000
MAX_IMAGE = 16 * 1024 * 1024
READ_PIECE = 1024 * 1024
TRICKLE_PIECE = 512  # a "trickle" read's transfers
SLOW_ERASE_S_PER_MIB = 0.02  # a "slow" erase: about 50 MiB/s
REJECTED = 0x1D  # END_IMAGE_TX status: the image failed authentication


@dataclass
class _Program:
    lun: Lun
    offset: int
    left: int
    userdata: bool = False


def chip_serial(serial: str) -> int:
    """The handset's serial as the 32-bit chip serial Sahara reports (8 hex digits read as
    a number; anything else hashed)."""
    try:
        if len(serial) <= 8:
            return int(serial, 16)
    except ValueError:
        pass
    return zlib.crc32(serial.encode())


class EdlDevice:
    """The device side. ``out`` holds what it sends (one transfer each)."""

    def __init__(self, storage: HandsetStorage, spec: EdlSpec) -> None:
        self.storage, self.spec = storage, spec
        self.luns = open_luns(spec, storage)
        self.out = InPipe(lambda: self.present)
        self.lock = threading.RLock()
        self.boots = 0
        self.unplugged = False
        self.powered_off = False
        self.reboot_pending = False
        self._boot()

    @property
    def present(self) -> bool:
        return (self.storage.state.mode == "edl" and not self.unplugged and not self.powered_off
                and not self.storage.faults.unplugged)

    def _boot(self) -> None:
        self.state = "hello"
        self.image = bytearray()
        self.executing = 0
        self.program: _Program | None = None
        self.chattering = False
        self.payload = self.spec.max_payload
        self.out.clear()
        self._send_packet(sahara.HELLO, 2, 1, sahara.MAX_PACKET, sahara.MODE_IMAGE_TX, 0, 0, 0, 0, 0, 0)

    def _send_packet(self, command: int, *fields: int) -> None:
        self.out.put(sahara.encode(command, *fields))

    # -- input ----------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        with self.lock:
            try:
                if self.state == "firehose":
                    self._firehose(data)
                elif self.state == "image":
                    self._image_piece(data)
                else:
                    self._sahara(sahara.decode(data))
            except DeviceUnplugged:
                self.unplugged = True
                self.out.wake()
            except ProtocolError:
                pass  # a boot ROM ignores what it cannot parse: the host times out

    # -- Sahara ---------------------------------------------------------------------------
    def _sahara(self, packet: sahara.Packet) -> None:
        if packet.command == sahara.HELLO_RESP and self.state == "hello":
            if packet.fields[3] == sahara.MODE_COMMAND:
                self.state = "command"
                self._send_packet(sahara.CMD_READY)
            else:
                self.state = "image"
                self._send_packet(sahara.READ_DATA, IMAGE_ID, 0, IMAGE_PIECE)
        elif packet.command == sahara.EXECUTE and self.state == "command":
            self.executing = packet.fields[0]
            self._send_packet(sahara.EXECUTE_RSP, self.executing, len(self._answer(self.executing)))
        elif packet.command == sahara.EXECUTE_DATA and self.state == "command":
            self.out.put(self._answer(packet.fields[0]))
        elif packet.command == sahara.SWITCH_MODE and self.state == "command":
            self.state = "hello"
            self._send_packet(sahara.HELLO, 2, 1, sahara.MAX_PACKET, packet.fields[0], 0, 0, 0, 0, 0, 0)
        elif packet.command == sahara.DONE and self.state == "image-done":
            self.state = "firehose"
            self._send_packet(sahara.DONE_RESP, 0)
        elif packet.command == sahara.RESET:
            self._send_packet(sahara.RESET_RESP)
            self.reboot_pending = True

    def _answer(self, command: int) -> bytes:
        spec = self.spec
        return {sahara.EXEC_SERIAL: chip_serial(self.storage.state.serial).to_bytes(4, "little"),
                sahara.EXEC_HWID: spec.hwid.to_bytes(8, "little"),
                sahara.EXEC_PKHASH: spec.pkhash * 2,
                sahara.EXEC_SBL_VERSION: spec.sbl_version.to_bytes(4, "little")}.get(command, b"")

    def _image_piece(self, data: bytes) -> None:
        if self.spec.loader == "endless":  # a boot ROM that asks for the first piece for ever
            self._send_packet(sahara.READ_DATA, IMAGE_ID, 0, IMAGE_PIECE)
            return
        if self.spec.loader == "endless-zero":  # ... for no bytes at all, for ever
            self._send_packet(sahara.READ_DATA, IMAGE_ID, 0, 0)
            return
        if self.spec.loader == "endless-past-end":  # ... past the programmer's end, for ever
            self.image += data
            self._send_packet(sahara.READ_DATA, IMAGE_ID, len(self.image), IMAGE_PIECE)
            return
        self.image += data
        if len(data) == IMAGE_PIECE and len(self.image) < MAX_IMAGE:
            self._send_packet(sahara.READ_DATA, IMAGE_ID, len(self.image), IMAGE_PIECE)
            return
        rejected = self.spec.loader == "reject" or not self.image
        self.state = "hello" if rejected else "image-done"
        self._send_packet(sahara.END_IMAGE_TX, IMAGE_ID, REJECTED if rejected else 0)
        if rejected:  # the boot ROM starts over
            self.image = bytearray()
            self._send_packet(sahara.HELLO, 2, 1, sahara.MAX_PACKET, sahara.MODE_IMAGE_TX,
                              0, 0, 0, 0, 0, 0)

    # -- Firehose -------------------------------------------------------------------------
    def _reply(self, ack: bool, *logs: str, **attrs: Any) -> None:
        for line in logs:
            self.out.put(_doc("log", value=line))
        self.out.put(_doc("response", value="ACK" if ack else "NAK", **attrs))

    def _firehose(self, data: bytes) -> None:
        if self.program is not None:
            self._raw(data)
            return
        try:
            elements = firehose.parse(data)
        except ProtocolError:
            self._reply(False, "ERROR: XML not formed correctly")
            return
        for tag, attrs in elements:
            quirk = self.spec.quirks.get(tag)
            if quirk == "silent":
                continue
            if quirk == "chatter":  # logs for ever and never answers (a stuck programmer)
                self.chattering = True
                continue
            if quirk in ("negative", "nested", "huge-payload"):
                getattr(self, f"_fh_{tag}")(attrs, quirk)
                continue
            if quirk and quirk.startswith("nak"):  # "nak" or "nak:what the programmer logs"
                self._reply(False, quirk[4:] or f"ERROR: {tag} failed")
                continue
            handler = getattr(self, f"_fh_{tag}", None)
            if handler is None or (tag not in self.spec.functions and tag != "configure"):
                self._reply(False, f"ERROR: Unrecognized XML tag '{tag[:40]}'")
            else:
                handler(attrs)

    def _fh_configure(self, attrs: dict[str, str], quirk: str = "") -> None:
        memory = attrs.get("MemoryName", "").lower()
        want = _int(attrs.get("MaxPayloadSizeToTargetInBytes")) or firehose.DEFAULT_PAYLOAD
        common = {"MemoryName": self.spec.memory.upper(), "TargetName": f"{self.spec.hwid >> 32:08x}",
                  "MaxPayloadSizeToTargetInBytesSupported": self.spec.max_payload,
                  "MaxPayloadSizeFromTargetInBytes": READ_PIECE}
        if memory != self.spec.memory:
            self._reply(False, f"ERROR: Failed to open the {memory.upper()[:10]} device", **common)
        elif want > self.spec.max_payload:
            self._reply(False, f"ERROR: MaxPayloadSizeToTargetInBytes {want} is larger than "
                               f"{self.spec.max_payload}",
                        MaxPayloadSizeToTargetInBytes=self.spec.max_payload, **common)
        else:
            self.payload = want
            self._reply(True, f"INFO: Supported Functions ({len(self.spec.functions)}):",
                        *self.spec.functions, "INFO: End of supported functions",
                        MaxPayloadSizeToTargetInBytes=1 << 40 if quirk == "huge-payload" else want,
                        **common)

    def _lun(self, attrs: dict[str, str]) -> Lun | None:
        number = _int(attrs.get("physical_partition_number"), -1)
        return self.luns[number] if 0 <= number < len(self.luns) else None

    def _fh_getstorageinfo(self, attrs: dict[str, str], quirk: str = "") -> None:
        lun = self._lun(attrs)
        if lun is None:
            self._reply(False, "ERROR: Failed to get LUN info: invalid physical partition")
            return
        if quirk == "nested":
            self._reply(True, 'INFO: {"storage_info": ' + "[" * 20_000)
            return
        total = -lun.total if quirk == "negative" and lun is not self.luns[0] else lun.total
        info = {"storage_info": {"total_blocks": total, "block_size": lun.sector,
                                 "page_size": 4096, "num_physical": len(self.luns),
                                 "mem_type": self.spec.memory.upper(), "prod_name": "PWEMU",
                                 "fw_version": "0100"}}
        self._reply(True, "INFO: " + json.dumps(info))

    def _range(self, attrs: dict[str, str]) -> tuple[Lun, int, int] | None:
        """(LUN, byte offset, byte length) of a sector range, or None after a NAK."""
        lun = self._lun(attrs)
        sector = _int(attrs.get("SECTOR_SIZE_IN_BYTES"))
        start, count = _int(attrs.get("start_sector"), -1), _int(attrs.get("num_partition_sectors"))
        if lun is None:
            self._reply(False, "ERROR: invalid physical partition")
        elif sector != lun.sector:
            self._reply(False, f"ERROR: SECTOR_SIZE_IN_BYTES {sector} does not match {lun.sector}")
        elif start < 0 or count <= 0 or start + count > lun.total:
            self._reply(False, f"ERROR: start_sector {start} + num_partition_sectors {count} "
                               f"exceeds the LUN ({lun.total} sectors)")
        else:
            return lun, start * sector, count * sector
        return None

    def _fh_read(self, attrs: dict[str, str]) -> None:
        found = self._range(attrs)
        if found is None:
            return
        lun, offset, length = found
        try:
            data = lun.read(offset, length)
        except OSError:
            self._reply(False, "ERROR: Failed to read from the storage device")
            return
        self._reply(True, rawmode="true")
        if self.spec.quirks.get("read") == "short":
            data = data[:len(data) // 2]
        piece = TRICKLE_PIECE if self.spec.quirks.get("read") == "trickle" else READ_PIECE
        for pos in range(0, len(data), piece):
            self.out.put(data[pos:pos + piece])
        self._reply(True, rawmode="false")

    def _fh_program(self, attrs: dict[str, str]) -> None:
        found = self._range(attrs)
        if found is not None:
            self.program = _Program(found[0], found[1], found[2])
            self._reply(True, rawmode="true")

    def _raw(self, data: bytes) -> None:
        p = self.program
        assert p is not None
        if len(data) > self.payload:
            self.program = None
            self._reply(False, f"ERROR: payload of {len(data)} bytes is larger than "
                               f"MaxPayloadSizeToTargetInBytes {self.payload}")
            return
        take = data[:p.left]
        p.userdata |= p.lun.write(p.offset, take)
        p.offset += len(take)
        p.left -= len(take)
        if p.left == 0:
            self.program = None
            if p.userdata:
                self.storage.userdata_wiped()
            self._reply(True, rawmode="false")

    def _fh_erase(self, attrs: dict[str, str]) -> None:
        found = self._range(attrs)
        if found is None:
            return
        lun, offset, length = found
        zeros = bytes(READ_PIECE)
        touched = False
        for pos in range(0, length, READ_PIECE):
            touched |= lun.write(offset + pos, zeros[:min(READ_PIECE, length - pos)])
        if touched:
            self.storage.userdata_wiped()
        if self.spec.quirks.get("erase") == "slow":  # answers when a real eMMC might: later
            threading.Timer(SLOW_ERASE_S_PER_MIB * length / 2**20, self._reply, (True,)).start()
            return
        self._reply(True)

    def _fh_nop(self, attrs: dict[str, str]) -> None:
        self._reply(True, "INFO: Binary build date: emulated")

    def _fh_patch(self, attrs: dict[str, str]) -> None:
        self._reply(True)

    def _fh_power(self, attrs: dict[str, str]) -> None:
        self._reply(True)
        if attrs.get("value", "reset").lower() == "off":
            self.powered_off = True
        else:
            self.reboot_pending = True  # once the host has the ACK

    def reboot(self) -> None:
        """A phone that cannot boot falls back into EDL: it enumerates afresh."""
        self.boots += 1
        self.reboot_pending = False
        self._boot()

    def after_read(self) -> None:
        """The host has read what was queued: a reset that waited for it happens now."""
        with self.lock:
            if self.reboot_pending and not self.out.pending():
                self.reboot()


def _doc(tag: str, **attrs: Any) -> bytes:
    return firehose.build(tag, **attrs)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value), 0)
    except (TypeError, ValueError):
        return default


class EdlGadget:
    """The phone's 05c6:9008 USB function (interface FF/FF/FF) on an `EmulatedUsbBus`."""

    def __init__(self, device: EdlDevice, max_packet: int = 512) -> None:
        self.device = device
        d = device.storage.profile.device
        sn = f"{chip_serial(device.storage.state.serial):08X}"
        self.spec = DeviceSpec(
            vendor_id=QUALCOMM_VID, product_id=EDL_PID, manufacturer="Qualcomm CDMA Technologies MSM",
            product=f"QUSB_BULK_CID:0402_SN:{sn}", serial="",
            interfaces=(InterfaceSpec(0xFF, 0xFF, 0xFF, (EndpointSpec(EP_OUT, max_packet),
                                                         EndpointSpec(EP_IN, max_packet)),
                                      name=f"{d.manufacturer} EDL"),))

    @property
    def generation(self) -> int:
        return self.device.boots

    def present(self) -> bool:
        return self.device.present

    def bulk_out(self, endpoint: int, data: bytes) -> None:
        if endpoint == EP_OUT:
            self.device.receive(data)

    def bulk_in(self, endpoint: int, size: int, timeout: float | None) -> bytes:
        if self.device.spec.quirks.get("read") == "trickle":
            time.sleep(0.005)  # with TRICKLE_PIECE: about 100 KiB/s
        if self.device.chattering and not self.device.out.pending():
            time.sleep(0.001)
            return _doc("log", value="INFO: still working")
        data = self.device.out.get(size, timeout)
        self.device.after_read()
        return data


class EmulatedEdl:
    """A running emulated EDL handset (a `RunningEmulator`) on ``bus``."""

    def __init__(self, storage: HandsetStorage, spec: EdlSpec, bus: EmulatedUsbBus,
                 publish_in: Path | None = None) -> None:
        self.device = EdlDevice(storage, spec)
        self.gadget = EdlGadget(self.device)
        self.bus = bus
        bus.add(self.gadget)
        self.relay: RelayServer | None = None
        self.published: list[Path] = []
        if publish_in is not None:  # other processes of this user attach it (relay.py)
            self.relay = RelayServer(self.gadget)
            self.published.append(publish(publish_in, "edl", self.relay.address,
                                          storage.state.serial))
        sn = self.gadget.spec.product
        self.address = next((usb_address(d) for d in find_devices(bus.backend())
                             if _product(d) == sn), "")

    @property
    def endpoints(self) -> dict[str, str]:
        return {"edl": self.address} if self.address else {}

    def unplug(self) -> None:
        self.device.unplugged = True
        self.device.out.wake()

    def stop(self) -> None:
        for entry in self.published:
            withdraw(entry)
        if self.relay is not None:
            self.relay.stop()
        self.bus.remove(self.gadget)
        for lun in self.device.luns:
            lun.close()


def _product(device: Any) -> str:
    import usb.util
    try:
        return str(usb.util.get_string(device, device.iProduct) or "")
    except Exception:  # noqa: BLE001 - a device that cannot say is not ours
        return ""
