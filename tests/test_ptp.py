"""Sony PTP extension: containers byte for byte, property-list parsing, and a full focus move
against a fake body that answers at the USB-transfer level."""

from __future__ import annotations

import struct

import pytest

from zedd_capture.devices import ptp
from zedd_capture.devices.focus import SonyAbsoluteFocus
from zedd_capture.devices.protocols import DeviceError
from zedd_capture.devices.ptp import Container, SonyPropInfo


def hx(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def test_open_session_command_bytes():
    c = Container(ptp.CONTAINER_COMMAND, ptp.OC_OPEN_SESSION, 0, (1,))
    assert ptp.encode_container(c) == hx("10000000 0100 0210 00000000 01000000")


def test_set_focus_position_command_and_data_bytes():
    cmd = ptp.encode_container(Container(ptp.CONTAINER_COMMAND, 0x9205, 7, (0xE042,)))
    data = ptp.encode_container(Container(ptp.CONTAINER_DATA, 0x9205, 7, (), ptp.encode_value(0x6D3E, ptp.DTC_UINT16)))
    assert cmd == hx("10000000 0100 0592 07000000 42E00000")
    assert data == hx("0E000000 0200 0592 07000000 3E6D")


def test_decode_response_and_errors():
    c = ptp.decode_container(hx("10000000 0300 0120 07000000 2A000000"))
    assert (c.type, c.code, c.transaction_id, c.params) == (3, 0x2001, 7, (42,))
    with pytest.raises(ptp.PtpError, match="length field"):
        ptp.decode_container(hx("20000000 0300 0120 07000000"))
    with pytest.raises(ptp.PtpError, match="too short"):
        ptp.decode_container(b"\x01\x02")
    with pytest.raises(ValueError, match="does not fit"):
        ptp.encode_value(0x10000, ptp.DTC_UINT16)


def test_roundtrip_get_all_command():
    raw = ptp.encode_container(Container(ptp.CONTAINER_COMMAND, 0x9209, 3))
    assert raw == hx("0C000000 0100 0992 03000000")
    assert ptp.decode_container(raw) == Container(1, 0x9209, 3, ())


# hand-assembled GetAllExtDevicePropInfo payload: 3 properties
PAYLOAD = hx(
    "0300000000000000"                                   # u64 count = 3
    "43E0 0400 00 01 0000 7123 00"                        # E043 UINT16 ro enabled default 0 current 0x2371 form none
    "9CD1 0200 00 01 01 02 02 0200 0102 0200 0102"        # D19C UINT8 default 1 current 2 (driving) enum [1,2] x2
    "42E0 0400 01 01 0000 7123 01 0000 FFFF 0100"         # E042 UINT16 rw range 0..FFFF step 1
)


def test_parse_get_all_ext_device_prop_info():
    props = ptp.parse_all_ext_device_prop_info(PAYLOAD, enum_lists=2)
    assert set(props) == {0xE043, 0xD19C, 0xE042}
    assert props[0xE043].current == 0x2371 and props[0xE043].form == ptp.FORM_NONE
    assert props[0xD19C].current == ptp.FOCUS_DRIVING and props[0xD19C].form_values == [1, 2, 1, 2]
    assert props[0xE042].form_values == [0, 0xFFFF, 1] and props[0xE042].get_set == 1
    # our encoder writes the same bytes back
    again = struct.pack("<Q", 3) + b"".join(ptp.encode_prop_info(props[k]) for k in (0xE043, 0xD19C, 0xE042))
    assert again == PAYLOAD


def test_parse_truncated_payload_names_the_property():
    with pytest.raises(ptp.PtpError, match="0xD19C"):
        ptp.parse_all_ext_device_prop_info(PAYLOAD[:30])


# --- a fake body at the USB-transfer level ---------------------------------------------------
class FakeSonyBody:
    """Answers PTP containers like a Sony body in PC-remote mode; the lens drives 0x400 counts per poll."""

    def __init__(self, position=0x1000, packet=64):
        self.position, self.target, self.packet = position, position, packet
        self.claimed = False
        self.log: list[str] = []
        self.out: list[bytes] = []
        self.pending_cmd: Container | None = None
        self.session = False

    # UsbLink
    def claim(self):
        assert not self.claimed, "interface claimed twice"
        self.claimed = True
        self.log.append("claim")

    def release(self):
        self.claimed = False
        self.session = False
        self.log.append("release")

    def write(self, data: bytes):
        assert self.claimed, "write on an unclaimed interface"
        c = ptp.decode_container(data)
        if c.type == ptp.CONTAINER_COMMAND and c.code == ptp.OC_SONY_SET_EXT_DEVICE_PROP_VALUE:
            self.pending_cmd = c  # data phase follows
            return
        if c.type == ptp.CONTAINER_DATA:
            cmd, self.pending_cmd = self.pending_cmd, None
            assert cmd is not None and cmd.transaction_id == c.transaction_id
            assert cmd.params == (ptp.DPC_FOCUS_POSITION_SETTING,)
            (self.target,) = struct.unpack("<H", c.payload)
            self._respond(c.transaction_id)
            return
        self.log.append(f"op {c.code:04X}")
        if c.code == ptp.OC_OPEN_SESSION:
            self.session = True
        elif not self.session:
            self._respond(c.transaction_id, 0x2003)
            return
        if c.code == ptp.OC_SONY_GET_EXT_DEVICE_INFO:
            self._data(c, struct.pack("<H", 300) + b"\x00" * 6)
        elif c.code == ptp.OC_SONY_GET_ALL_EXT_DEVICE_PROP_INFO:
            step = max(-0x400, min(0x400, self.target - self.position))
            driving = self.position != self.target
            self.position += step
            props = [
                SonyPropInfo(0xE043, ptp.DTC_UINT16, 0, 1, 0, self.position, 0),
                SonyPropInfo(0xD19C, 0x0002, 0, 1, 1, 2 if driving else 1, 2, [1, 2, 1, 2]),
            ]
            self._data(c, struct.pack("<Q", 2) + b"".join(ptp.encode_prop_info(p) for p in props))
        self._respond(c.transaction_id)

    def _data(self, c, payload):
        raw = ptp.encode_container(Container(ptp.CONTAINER_DATA, c.code, c.transaction_id, (), payload))
        self.out += [raw[i:i + self.packet] for i in range(0, len(raw), self.packet)]  # several transfers

    def _respond(self, tid, code=ptp.RC_OK):
        self.out.append(ptp.encode_container(Container(ptp.CONTAINER_RESPONSE, code, tid)))

    def read(self, timeout_ms):
        assert self.claimed
        if not self.out:
            raise DeviceError("timeout")
        return self.out.pop(0)


class Handoff:
    def __init__(self, body, log):
        self.body, self.log = body, log

    def release_usb(self):
        assert not self.body.claimed
        self.log.append("gphoto2 release")

    def reacquire_usb(self):
        assert not self.body.claimed, "gphoto2 must get the interface back only after PTP released it"
        self.log.append("gphoto2 reacquire")


def test_absolute_focus_move_waits_for_driving_and_hands_usb_back():
    body = FakeSonyBody(position=0x1000)
    log = body.log
    motor = SonyAbsoluteFocus(body, handoff=Handoff(body, log), sleep=lambda s: None)
    achieved = motor.move_to(0x2371)
    assert achieved == 0x2371 == body.position
    assert log[0] == "gphoto2 release" and log[1] == "claim"
    assert log[-2:] == ["release", "gphoto2 reacquire"]
    assert log.count(f"op {ptp.OC_SONY_GET_ALL_EXT_DEVICE_PROP_INFO:04X}") >= 5  # polled while driving
    assert log.index("op 9201") < log.index("op 9202")
    assert not body.claimed
    n_claims = log.count("claim")
    assert motor.position() == 0x2371 and log.count("claim") == n_claims  # cached read-back, no hand-off
    body.position = body.target = 0x2375  # someone turned the focus ring
    assert motor.position(fresh=True) == 0x2375 and log.count("claim") == n_claims + 1


def test_absolute_focus_error_response_is_a_device_error_and_releases():
    body = FakeSonyBody()
    body.session_blocked = True
    orig = body.write

    def write(data):
        c = ptp.decode_container(data)
        if c.code == ptp.OC_SONY_SDIO_CONNECT and c.params[0] == 2:
            body._respond(c.transaction_id, 0x2019)
            return
        orig(data)

    body.write = write
    motor = SonyAbsoluteFocus(body, sleep=lambda s: None)
    with pytest.raises(DeviceError, match=r"0x9201 failed: response 0x2019 \(Device_Busy\)"):
        motor.move_to(0x2000)
    assert not body.claimed
