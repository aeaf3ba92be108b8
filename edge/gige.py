"""GigE Vision cameras through Aravis (GObject introspection): ``camera.kind: gige``.

An industrial camera is set up on every connect (pixel format, trigger, exposure, gain, frame
rate, packet size), because it keeps whatever the last program left in it. Its frames arrive as
Aravis buffers, and a buffer is as hostile as a network packet: a frame counts only when its
status is complete, it holds an image in the configured pixel format, its size is within bounds
and its byte count is exactly width × height × bytes per pixel; any other buffer is a counted
skip (``bad_buffer``). Every format becomes a BGR frame (Mono8 replicated, Bayer demosaiced, RGB8
reordered).

In ``free_run`` the camera is a live camera like any other (latest frame, counted skips). Triggered
(``software`` or ``hardware``) it sends a frame only when triggered, so its health is its control
link, not its silence: a software trigger is fired by the station for each unit
(``request_frame``), and a hardware-triggered camera makes each pulse a unit (lossless, in
continuous mode). Aravis reports a pulled cable as ``control-lost`` (its heartbeat fails after a
few seconds); the capture thread then closes the camera and reopens it with the sources' backoff,
while the station reports the camera down and answers triggers with NO_DECISION.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np

from lineguard.config import CameraConfig
from lineguard.edge.sources import FrameSource, Image, printable
from lineguard.errors import ConfigError, MissingDependencyError
from lineguard.logs import Events
from lineguard.monitoring import Metrics

__all__ = ["BufferInfo", "GigeSource", "buffer_problem", "load_aravis", "to_bgr"]

event = Events("lineguard.edge.gige")

_BYTES_PER_PIXEL: Final = {"Mono8": 1, "BayerRG8": 1, "BayerGR8": 1, "BayerGB8": 1, "BayerBG8": 1, "RGB8": 3}
# GenICam names the Bayer pattern by its first row, like OpenCV's RGGB/GRBG/... aliases.
_TO_BGR: Final = {
    "Mono8": cv2.COLOR_GRAY2BGR,
    "BayerRG8": cv2.COLOR_BayerRGGB2BGR,
    "BayerGR8": cv2.COLOR_BayerGRBG2BGR,
    "BayerGB8": cv2.COLOR_BayerGBRG2BGR,
    "BayerBG8": cv2.COLOR_BayerBGGR2BGR,
    "RGB8": cv2.COLOR_RGB2BGR,
}
_SIDE: Final = (2, 65535)  # GigE Vision's 16-bit width and height; a Bayer tile needs two
_POP_TIMEOUT_US: Final = 100_000  # how often the capture thread looks at stop and the control link
_ID_MAX: Final = 128
_BAD_BUFFER_LOG_EVERY: Final = 100


def load_aravis() -> Any:
    """The ``Aravis`` namespace; a missing PyGObject or Aravis is a one-line error naming the install."""
    try:
        import gi
    except ImportError as exc:
        raise MissingDependencyError("PyGObject", "gige") from exc
    try:
        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            "camera.kind 'gige' needs Aravis 0.8's introspection data; "
            "install it with: apt-get install gir1.2-aravis-0.8"
        ) from exc
    return Aravis


@dataclass(frozen=True)
class BufferInfo:
    """What a camera's buffer claims about itself, read before its bytes are trusted."""

    complete: bool
    image: bool
    pixel_format: int
    width: int
    height: int
    nbytes: int


def buffer_problem(info: BufferInfo, pixel_format: str, format_code: int, max_pixels: int) -> str | None:
    """Why this buffer is not a frame of the configured format, or ``None`` when it is one."""
    if not info.complete:
        return "incomplete buffer (packets lost or timed out)"
    if not info.image:
        return "buffer holds no image"
    if info.pixel_format != format_code:
        return f"pixel format 0x{info.pixel_format:08x}, configured {pixel_format}"
    low, high = _SIDE
    if not (low <= info.width <= high and low <= info.height <= high):
        return f"size {info.width}x{info.height} outside {low}..{high}"
    if info.width * info.height > max_pixels:
        return f"{info.width}x{info.height} is over camera.max_image_pixels ({max_pixels})"
    expected = info.width * info.height * _BYTES_PER_PIXEL[pixel_format]
    if info.nbytes != expected:
        return f"{info.nbytes} bytes for {info.width}x{info.height} {pixel_format} (expected {expected})"
    return None


def to_bgr(data: bytes, width: int, height: int, pixel_format: str, out: Image | None = None) -> Image:
    """The BGR frame of a checked buffer, written into ``out`` when it has the frame's shape."""
    raw = np.frombuffer(data, np.uint8)
    src = raw.reshape(height, width, 3) if _BYTES_PER_PIXEL[pixel_format] == 3 else raw.reshape(height, width)
    if out is not None and out.shape == (height, width, 3):
        cv2.cvtColor(src, _TO_BGR[pixel_format], dst=out)
        return out
    return np.asarray(cv2.cvtColor(src, _TO_BGR[pixel_format]), dtype=np.uint8)


class GigeSource(FrameSource):
    """One GigE Vision camera; the station may hold several, each with its own Aravis camera."""

    reconnects_on_drop = True

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        if len(cfg.uri) > _ID_MAX or printable(cfg.uri) != cfg.uri:
            raise ConfigError(
                f"camera.uri for kind 'gige' must be an IP address, serial number or device id of at "
                f"most {_ID_MAX} printable characters"
            )
        self._aravis = load_aravis()
        self.gige = cfg.gige
        self.frames_on_demand = cfg.gige.trigger != "free_run"
        self.station_triggered = cfg.gige.trigger == "software"
        if cfg.gige.trigger == "hardware":
            # Every pulse is a unit (a triggered station sets this back); it keeps its capture time,
            # so a station that falls behind shows it as deadline misses instead of dropping units.
            self.lossless = True
        self._lock = threading.Lock()  # the camera object, shared by capture and trigger threads
        self._camera: Any = None
        self._stream: Any = None
        self._lost_handler = 0
        self._lost = threading.Event()
        self._format_code = 0
        self._bad_buffers = 0

    @property
    def name(self) -> str:
        return f"gige:{self.cfg.uri or 'first camera found'}"

    # -- connection -----------------------------------------------------------------------
    def _open(self) -> None:
        aravis = self._aravis
        try:
            camera = aravis.Camera.new(self._device_id())
            self._configure(camera)
            stream = self._open_stream(camera)
            self._lost.clear()
            self._lost_handler = camera.get_device().connect("control-lost", self._on_control_lost)
            camera.start_acquisition()
            if self.gige.trigger == "software":
                self._prime(camera, stream)
            settings = self._describe_settings(camera)
        except RuntimeError as exc:  # GLib.Error: not found, refused, a feature it lacks, gone again
            raise OSError(_message(exc)) from exc
        with self._lock:
            self._camera, self._stream = camera, stream
        event(logging.INFO, "gige_connected", camera=self.name, settings=settings)

    def _device_id(self) -> str | None:
        """What ``Camera.new`` takes: an IP address or device id as given; a serial number looked up."""
        uri = self.cfg.uri
        if not uri:
            return None
        try:
            ipaddress.ip_address(uri)
            return uri
        except ValueError:
            pass
        aravis = self._aravis
        aravis.update_device_list()
        for i in range(aravis.get_n_devices()):
            if uri in (aravis.get_device_serial_nbr(i), aravis.get_device_id(i)):
                return str(aravis.get_device_id(i))
        return uri

    def _configure(self, camera: Any) -> None:
        """Write every setting that decides which frames arrive (the camera remembers the last ones)."""
        g = self.gige
        camera.set_pixel_format_from_string(g.pixel_format)
        if g.trigger == "free_run":
            camera.clear_triggers()
            camera.set_frame_rate(self.cfg.fps)
        else:
            camera.set_trigger("Software" if g.trigger == "software" else g.trigger_line)
            if g.trigger == "hardware":
                edge = "RisingEdge" if g.trigger_activation == "rising_edge" else "FallingEdge"
                camera.set_string("TriggerActivation", edge)
        if g.exposure_us is not None:
            camera.set_exposure_time(g.exposure_us)
        if g.gain_db is not None:
            camera.set_gain(g.gain_db)
        if g.packet_size is not None:
            camera.gv_set_packet_size(g.packet_size)
        else:
            camera.gv_auto_packet_size()
        camera.set_acquisition_mode(self._aravis.AcquisitionMode.CONTINUOUS)
        self._format_code = int(camera.get_pixel_format())

    def _open_stream(self, camera: Any) -> Any:
        aravis = self._aravis
        if camera.get_device().get_device_address().get_address().get_is_loopback():
            # Root's packet socket sees nothing on loopback; the plain socket path works everywhere.
            camera.gv_set_stream_options(aravis.GvStreamOption.PACKET_SOCKET_DISABLED)
        stream = camera.create_stream(None, None)
        if stream is None:
            raise OSError(f"{self.name}: no stream channel")
        stream.set_property("socket-buffer", aravis.GvStreamSocketBuffer.AUTO)  # else packets go missing
        payload = int(camera.get_payload())
        limit = self.cfg.max_image_pixels * _BYTES_PER_PIXEL[self.gige.pixel_format]
        if not 0 < payload <= limit:  # the camera says how much to allocate: bound it first
            raise OSError(f"{self.name}: payload of {payload} bytes outside 1..{limit}")
        for _ in range(self.gige.buffers):
            stream.push_buffer(aravis.Buffer.new_allocate(payload))
        return stream

    def _prime(self, camera: Any, stream: Any) -> None:
        """Trigger once and drop the frame: the first frame after a start may come back incomplete
        (seen with the fake camera after an idle start), and a PLC's first unit must not pay for it."""
        camera.software_trigger()
        buffer = stream.timeout_pop_buffer(1_000_000)
        if buffer is not None:
            stream.push_buffer(buffer)

    def _on_control_lost(self, _device: Any) -> None:
        """Aravis' heartbeat thread: the camera stopped answering (cable, power, another host)."""
        self._lost.set()
        self._set_detail("control link lost (no heartbeat answer); reconnecting")

    def _link_up(self) -> bool:
        return self._camera is not None and not self._lost.is_set()

    def _close(self) -> None:
        with self._lock:
            camera, stream, self._camera, self._stream = self._camera, self._stream, None, None
        if camera is None:
            return
        if not self._lost.is_set():  # a lost camera would only time out
            try:
                camera.stop_acquisition()
            except RuntimeError as exc:
                event(logging.WARNING, "gige_stop_failed", camera=self.name, error=_message(exc))
        camera.get_device().disconnect(self._lost_handler)
        del stream, camera  # Aravis closes the sockets when the last reference goes

    # -- frames ---------------------------------------------------------------------------
    def request_frame(self) -> bool:
        """Fire the software trigger; a hardware-triggered or free-running camera needs only its link."""
        with self._lock:
            camera = self._camera
            if camera is None or self._lost.is_set():
                return False
            if self.gige.trigger != "software":
                return True
            try:
                camera.software_trigger()
            except RuntimeError as exc:
                event(logging.WARNING, "gige_trigger_failed", camera=self.name, error=_message(exc))
                return False
        return True

    def _grab(self, buf: Image | None) -> Image | None:
        stream = self._stream
        while stream is not None and not self._stop.is_set() and not self._lost.is_set():
            buffer = stream.timeout_pop_buffer(_POP_TIMEOUT_US)
            if buffer is None:
                continue
            try:
                info, data = self._read(buffer)
                fmt = self.gige.pixel_format
                problem = buffer_problem(info, fmt, self._format_code, self.cfg.max_image_pixels)
                if problem is None:
                    return to_bgr(data, info.width, info.height, fmt, buf)
            finally:
                stream.push_buffer(buffer)  # back to the camera's queue, whatever it held
            self._bad_buffer(problem)
        return None  # stopping, or the link is lost: the capture thread reconnects

    def _read(self, buffer: Any) -> tuple[BufferInfo, bytes]:
        """The buffer's claims and bytes; an incomplete or non-image buffer has no image fields to read."""
        aravis = self._aravis
        complete = buffer.get_status() == aravis.BufferStatus.SUCCESS
        image = buffer.get_payload_type() == aravis.BufferPayloadType.IMAGE
        if not (complete and image):
            return BufferInfo(complete, image, 0, 0, 0, 0), b""
        data = bytes(buffer.get_data())
        info = BufferInfo(
            complete,
            image,
            int(buffer.get_image_pixel_format()),
            int(buffer.get_image_width()),
            int(buffer.get_image_height()),
            len(data),
        )
        return info, data

    def _bad_buffer(self, problem: str) -> None:
        self.count_skip("bad_buffer")
        self._bad_buffers += 1
        if self._bad_buffers % _BAD_BUFFER_LOG_EVERY == 1:
            event(
                logging.WARNING, "gige_bad_buffer", camera=self.name, problem=problem, total=self._bad_buffers
            )

    def _describe_settings(self, camera: Any) -> dict[str, object]:
        g = self.gige
        _, _, width, height = camera.get_region()
        return {
            "pixel_format": g.pixel_format,
            "size": f"{width}x{height}",
            "trigger": g.trigger if g.trigger != "hardware" else f"{g.trigger_line} {g.trigger_activation}",
            "packet_size": int(camera.gv_get_packet_size()),
            "buffers": g.buffers,
        }


def _message(exc: RuntimeError) -> str:
    """A GLib error's own message, one bounded line (it may quote the camera's feature names)."""
    text = str(getattr(exc, "message", None) or exc)
    return printable(text.replace("\n", " "), 300)
