"""Sony's PTP extension over USB: just enough to drive the absolute focus position.

libgphoto2 cannot reach the Sony focus position (its Sony property filter drops the 0xE0xx
codes, as measured on these machines with libgphoto2 2.5.34), so this module speaks the PTP bulk
protocol itself:

* container encode/decode (PTP over USB, little endian): ``length u32, type u16, code u16,
  transaction id u32, params u32 * n`` followed, for data containers, by the payload;
* the Sony handshake (OpenSession, SDIOConnect 0x9201 phases 1/2/3, GetExtDeviceInfo 0x9202);
* ``SetExtDevicePropValue`` 0x9205 of FocusPositionSetting 0xE042 (UINT16);
* ``GetAllExtDevicePropInfo`` 0x9209 parsed for FocusPositionCurrentValue 0xE043 and
  FocusDrivingStatus 0xD19C.

The transport (:class:`UsbLink`) claims the camera's still-image interface only while this
module talks to the body; :meth:`SonyPtpSession.close` releases it again so the gphoto2
session can re-open the camera (a USB interface has one owner at a time).

Nothing here was run against a real body (no hardware on the build machines): the byte
layouts follow the PTP standard (ISO 15740) and the Sony device-property layout libgphoto2
documents; the tests check them byte for byte against hand-assembled containers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from .protocols import DeviceError

# --- codes ---------------------------------------------------------------------------------
CONTAINER_COMMAND = 1
CONTAINER_DATA = 2
CONTAINER_RESPONSE = 3
CONTAINER_EVENT = 4

OC_OPEN_SESSION = 0x1002
OC_CLOSE_SESSION = 0x1003
OC_SONY_SDIO_CONNECT = 0x9201
OC_SONY_GET_EXT_DEVICE_INFO = 0x9202
OC_SONY_SET_EXT_DEVICE_PROP_VALUE = 0x9205
OC_SONY_GET_ALL_EXT_DEVICE_PROP_INFO = 0x9209

RC_OK = 0x2001
RC_NAMES = {
    0x2001: "OK",
    0x2002: "General_Error",
    0x2003: "Session_Not_Open",
    0x2005: "Operation_Not_Supported",
    0x2019: "Device_Busy",
    0x201D: "Invalid_Parameter",
    0x201E: "Session_Already_Open",
    0x200A: "DeviceProp_Not_Supported",
    0x201C: "Invalid_DeviceProp_Value",
}

DPC_FOCUS_POSITION_SETTING = 0xE042
DPC_FOCUS_POSITION_CURRENT = 0xE043
DPC_FOCUS_DRIVING_STATUS = 0xD19C
FOCUS_NOT_DRIVING = 0x01
FOCUS_DRIVING = 0x02

SONY_VENDOR_ID = 0x054C
SDIO_PROTOCOL_VERSION = 300  # asked for in GetExtDeviceInfo; bodies of the alpha 1 II generation answer 300

# PTP data type codes -> struct format (little endian)
DTC_FORMATS = {
    0x0001: "<b", 0x0002: "<B", 0x0003: "<h", 0x0004: "<H",
    0x0005: "<i", 0x0006: "<I", 0x0007: "<q", 0x0008: "<Q",
}
DTC_UINT16 = 0x0004
DTC_STR = 0xFFFF
FORM_NONE, FORM_RANGE, FORM_ENUM = 0, 1, 2

HEADER = struct.Struct("<IHHI")  # length, type, code, transaction id


class PtpError(DeviceError):
    """A PTP transaction failed: bad container, unexpected phase or a non-OK response code."""


# --- containers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Container:
    type: int
    code: int
    transaction_id: int
    params: tuple[int, ...] = ()
    payload: bytes = b""


def encode_container(c: Container) -> bytes:
    """Bytes of one USB bulk container (a command/response carries params, a data container a payload)."""
    if len(c.params) > 5:
        raise ValueError(f"a PTP container carries at most 5 parameters, got {len(c.params)}")
    if c.params and c.payload:
        raise ValueError("a container carries parameters or a payload, not both")
    body = struct.pack(f"<{len(c.params)}I", *c.params) + c.payload
    return HEADER.pack(HEADER.size + len(body), c.type, c.code, c.transaction_id) + body


def decode_container(data: bytes) -> Container:
    """Inverse of :func:`encode_container`; raises PtpError on a short or inconsistent container."""
    if len(data) < HEADER.size:
        raise PtpError(f"PTP container too short ({len(data)} bytes, need >= {HEADER.size})")
    length, ctype, code, tid = HEADER.unpack_from(data)
    if length != len(data):
        raise PtpError(f"PTP container length field {length} != {len(data)} bytes received")
    body = bytes(data[HEADER.size:])
    if ctype in (CONTAINER_COMMAND, CONTAINER_RESPONSE, CONTAINER_EVENT):
        if len(body) % 4 or len(body) > 20:
            raise PtpError(f"PTP {ctype=} container with {len(body)} parameter bytes")
        return Container(ctype, code, tid, struct.unpack(f"<{len(body) // 4}I", body))
    if ctype == CONTAINER_DATA:
        return Container(ctype, code, tid, (), body)
    raise PtpError(f"unknown PTP container type {ctype}")


def encode_value(value: int, datatype: int) -> bytes:
    """A property value as the camera expects it in a data phase."""
    fmt = DTC_FORMATS.get(datatype)
    if fmt is None:
        raise ValueError(f"PTP data type 0x{datatype:04X} not supported here")
    try:
        return struct.pack(fmt, value)
    except struct.error:
        raise ValueError(f"value {value} does not fit PTP data type 0x{datatype:04X}") from None


def _read_value(data: bytes, off: int, datatype: int) -> tuple[int | str, int]:
    if datatype == DTC_STR:  # PTP string: u8 count of UTF-16 code units (incl. NUL), then the units
        if off >= len(data):
            raise PtpError("property list truncated in a string")
        n = data[off]
        end = off + 1 + 2 * n
        if end > len(data):
            raise PtpError("property list truncated in a string")
        return data[off + 1:end].decode("utf-16-le").rstrip("\x00"), end
    fmt = DTC_FORMATS.get(datatype)
    if fmt is None:
        raise PtpError(f"property data type 0x{datatype:04X} not supported by the parser")
    size = struct.calcsize(fmt)
    if off + size > len(data):
        raise PtpError("property list truncated in a value")
    return struct.unpack_from(fmt, data, off)[0], off + size


@dataclass
class SonyPropInfo:
    """One entry of GetAllExtDevicePropInfo."""

    code: int
    datatype: int
    get_set: int
    is_enabled: int
    factory_default: int | str
    current: int | str
    form: int
    form_values: list = field(default_factory=list)  # range: [min, max, step]; enum: values (all lists)


def parse_all_ext_device_prop_info(payload: bytes, enum_lists: int = 2) -> dict[int, SonyPropInfo]:
    """Parse the data phase of GetAllExtDevicePropInfo (0x9209).

    Layout: ``u64 count`` then per property ``u16 code, u16 datatype, u8 get_set, u8 is_enabled,
    factory default, current value, u8 form flag, form``. A range form holds min/max/step; an
    enumeration holds ``enum_lists`` lists of ``u16 n, n values`` (Sony protocol version 3 sends two:
    the settable and the readable values; older bodies one).
    """
    if len(payload) < 8:
        raise PtpError(f"GetAllExtDevicePropInfo payload too short ({len(payload)} bytes)")
    (count,) = struct.unpack_from("<Q", payload, 0)
    off = 8
    props: dict[int, SonyPropInfo] = {}
    for i in range(count):
        if off + 6 > len(payload):
            raise PtpError(f"GetAllExtDevicePropInfo truncated at property {i} of {count}")
        code, dtype, get_set, enabled = struct.unpack_from("<HHBB", payload, off)
        off += 6
        try:
            props[code], off = _parse_prop_body(payload, off, code, dtype, get_set, enabled, enum_lists)
        except PtpError as e:
            raise PtpError(f"GetAllExtDevicePropInfo property {i} of {count} (0x{code:04X}): {e}") from None
    return props


def _parse_prop_body(payload: bytes, off: int, code: int, dtype: int, get_set: int, enabled: int,
                     enum_lists: int) -> tuple[SonyPropInfo, int]:
    default, off = _read_value(payload, off, dtype)
    current, off = _read_value(payload, off, dtype)
    if off >= len(payload):
        raise PtpError("form flag missing")
    form = payload[off]
    off += 1
    values: list = []
    if form == FORM_RANGE:
        for _ in range(3):
            v, off = _read_value(payload, off, dtype)
            values.append(v)
    elif form == FORM_ENUM:
        for _ in range(enum_lists):
            if off + 2 > len(payload):
                raise PtpError("enumeration truncated")
            (n,) = struct.unpack_from("<H", payload, off)
            off += 2
            for _ in range(n):
                v, off = _read_value(payload, off, dtype)
                values.append(v)
    elif form != FORM_NONE:
        raise PtpError(f"unknown form flag {form}")
    return SonyPropInfo(code, dtype, get_set, enabled, default, current, form, values), off


def encode_prop_info(p: SonyPropInfo, enum_lists: int = 2) -> bytes:
    """One property entry in the GetAllExtDevicePropInfo layout (used by tests and fakes)."""
    out = struct.pack("<HHBB", p.code, p.datatype, p.get_set, p.is_enabled)
    out += encode_value(p.factory_default, p.datatype) + encode_value(p.current, p.datatype)
    out += bytes([p.form])
    if p.form == FORM_RANGE:
        out += b"".join(encode_value(v, p.datatype) for v in p.form_values)
    elif p.form == FORM_ENUM:
        per = len(p.form_values) // enum_lists
        for k in range(enum_lists):
            chunk = p.form_values[k * per:(k + 1) * per]
            out += struct.pack("<H", len(chunk)) + b"".join(encode_value(v, p.datatype) for v in chunk)
    return out


# --- transport -------------------------------------------------------------------------------
class UsbLink(Protocol):
    """Bulk pipes of the camera's PTP interface (claimed between claim() and release())."""

    def claim(self) -> None: ...
    def release(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def read(self, timeout_ms: int) -> bytes:
        """One USB transfer from the bulk-in endpoint (<= max transfer size)."""


class PyUsbLink:
    """:class:`UsbLink` over pyusb/libusb for the first Sony body with a still-image (class 6) interface."""

    def __init__(self, vendor_id: int = SONY_VENDOR_ID, product_id: int | None = None, max_transfer: int = 1 << 16):
        self.vendor_id, self.product_id, self.max_transfer = vendor_id, product_id, max_transfer
        self._dev = self._intf = self._ep_in = self._ep_out = None
        self._detached = False

    def claim(self) -> None:
        try:
            import usb.core
            import usb.util
        except ImportError as e:  # pragma: no cover - pyusb is a dependency
            raise DeviceError(f"pyusb is not installed: {e}") from None
        kw = {"idVendor": self.vendor_id}
        if self.product_id is not None:
            kw["idProduct"] = self.product_id
        try:
            dev = usb.core.find(**kw)
        except usb.core.NoBackendError:
            raise DeviceError("libusb not found (install the libusb-1.0-0 package)") from None
        if dev is None:
            raise DeviceError(f"no USB device {self.vendor_id:04x}:{self.product_id or 0:04x} (camera off or unplugged?)")
        intf = None
        for cfg in dev:
            for i in cfg:
                if i.bInterfaceClass == 6:
                    intf = i
                    break
        if intf is None:
            raise DeviceError("the camera shows no still-image (PTP) USB interface: set USB Connection to PC Remote")
        try:
            if dev.is_kernel_driver_active(intf.bInterfaceNumber):
                dev.detach_kernel_driver(intf.bInterfaceNumber)
                self._detached = True
        except (NotImplementedError, usb.core.USBError):
            pass
        try:
            usb.util.claim_interface(dev, intf.bInterfaceNumber)
        except usb.core.USBError as e:
            raise DeviceError(f"cannot claim the camera's USB interface (still held by gphoto2 or another process?): {e}") from None
        ep = lambda d, t: usb.util.find_descriptor(  # noqa: E731
            intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == d
            and usb.util.endpoint_type(e.bmAttributes) == t)
        self._ep_in = ep(usb.util.ENDPOINT_IN, usb.util.ENDPOINT_TYPE_BULK)
        self._ep_out = ep(usb.util.ENDPOINT_OUT, usb.util.ENDPOINT_TYPE_BULK)
        self._dev, self._intf = dev, intf

    def release(self) -> None:
        if self._dev is None:
            return
        import usb.util

        try:
            usb.util.release_interface(self._dev, self._intf.bInterfaceNumber)
            if self._detached:
                self._dev.attach_kernel_driver(self._intf.bInterfaceNumber)
        except Exception:  # noqa: BLE001 - best effort on a device that may be gone
            pass
        usb.util.dispose_resources(self._dev)
        self._dev = self._intf = self._ep_in = self._ep_out = None
        self._detached = False

    def write(self, data: bytes) -> None:
        import usb.core

        try:
            self._ep_out.write(data)
        except usb.core.USBError as e:
            raise DeviceError(f"camera USB write failed (disconnected?): {e}") from None

    def read(self, timeout_ms: int) -> bytes:
        import usb.core

        try:
            return bytes(self._ep_in.read(self.max_transfer, timeout=timeout_ms))
        except usb.core.USBTimeoutError:
            raise DeviceError(f"camera did not answer within {timeout_ms} ms") from None
        except usb.core.USBError as e:
            raise DeviceError(f"camera USB read failed (disconnected?): {e}") from None


def read_container(link: UsbLink, timeout_ms: int = 5000) -> Container:
    """Read one whole container (it may span several USB transfers)."""
    data = link.read(timeout_ms)
    if len(data) < HEADER.size:
        raise PtpError(f"short USB transfer ({len(data)} bytes) where a PTP container starts")
    (length,) = struct.unpack_from("<I", data)
    buf = bytearray(data)
    while len(buf) < length:
        chunk = link.read(timeout_ms)
        if not chunk:
            raise PtpError(f"PTP container cut short ({len(buf)} of {length} bytes)")
        buf += chunk
    return decode_container(bytes(buf[:length]))


class SonyPtpSession:
    """One PTP session with a Sony body over a claimed USB interface (``with`` releases it)."""

    def __init__(self, link: UsbLink, timeout_ms: int = 5000):
        self.link, self.timeout_ms = link, timeout_ms
        self._tid = 0
        self.sdio_version = 0
        self.is_open = False

    # transactions
    def transaction(self, code: int, params: tuple[int, ...] = (), data_out: bytes | None = None) -> tuple[tuple[int, ...], bytes]:
        """Run one PTP transaction; returns (response params, data-in payload). Non-OK raises PtpError."""
        tid = self._tid
        self._tid += 1
        self.link.write(encode_container(Container(CONTAINER_COMMAND, code, tid, tuple(params))))
        if data_out is not None:
            self.link.write(encode_container(Container(CONTAINER_DATA, code, tid, (), data_out)))
        data_in = b""
        while True:
            c = read_container(self.link, self.timeout_ms)
            if c.transaction_id != tid:
                raise PtpError(f"PTP 0x{code:04X}: answer for transaction {c.transaction_id}, expected {tid}")
            if c.type == CONTAINER_DATA:
                data_in += c.payload
                continue
            if c.type != CONTAINER_RESPONSE:
                raise PtpError(f"PTP 0x{code:04X}: unexpected container type {c.type}")
            if c.code != RC_OK:
                name = RC_NAMES.get(c.code, "unknown")
                raise PtpError(f"PTP operation 0x{code:04X} failed: response 0x{c.code:04X} ({name})")
            return c.params, data_in

    def open(self) -> None:
        """Claim the interface, open session 1 and run Sony's SDIO connect handshake."""
        self.link.claim()
        self._tid = 0
        try:
            self.transaction(OC_OPEN_SESSION, (1,))
            self.transaction(OC_SONY_SDIO_CONNECT, (1, 0, 0))
            self.transaction(OC_SONY_SDIO_CONNECT, (2, 0, 0))
            _, info = self.transaction(OC_SONY_GET_EXT_DEVICE_INFO, (SDIO_PROTOCOL_VERSION,))
            self.sdio_version = struct.unpack_from("<H", info)[0] if len(info) >= 2 else 0
            self.transaction(OC_SONY_SDIO_CONNECT, (3, 0, 0))
        except BaseException:
            self.link.release()
            raise
        self.is_open = True

    def close(self) -> None:
        """Close the session and release the USB interface (so gphoto2 can take it back)."""
        try:
            if self.is_open:
                self.transaction(OC_CLOSE_SESSION)
        except DeviceError:
            pass
        finally:
            self.is_open = False
            self.link.release()

    def __enter__(self) -> "SonyPtpSession":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # properties
    def set_ext_prop(self, code: int, value: int, datatype: int = DTC_UINT16) -> None:
        """SetExtDevicePropValue (0x9205)."""
        self.transaction(OC_SONY_SET_EXT_DEVICE_PROP_VALUE, (code,), encode_value(value, datatype))

    def all_props(self) -> dict[int, SonyPropInfo]:
        """GetAllExtDevicePropInfo (0x9209): every property the body reports."""
        _, payload = self.transaction(OC_SONY_GET_ALL_EXT_DEVICE_PROP_INFO)
        return parse_all_ext_device_prop_info(payload, enum_lists=2 if self.sdio_version >= 300 else 1)

    def set_focus_position(self, hexcode: int) -> None:
        if not 0 <= hexcode <= 0xFFFF:
            raise ValueError(f"focus position {hexcode} outside 0..0xFFFF")
        self.set_ext_prop(DPC_FOCUS_POSITION_SETTING, hexcode, DTC_UINT16)

    def focus_state(self) -> tuple[int, bool]:
        """(FocusPositionCurrentValue 0xE043, driving?) from one GetAllExtDevicePropInfo."""
        props = self.all_props()
        cur = props.get(DPC_FOCUS_POSITION_CURRENT)
        if cur is None:
            raise DeviceError("the body does not report FocusPositionCurrentValue (0xE043): "
                              "set the focus mode to MF and enable PC remote focus control")
        drive = props.get(DPC_FOCUS_DRIVING_STATUS)
        driving = drive is not None and drive.current == FOCUS_DRIVING
        return int(cur.current), driving
