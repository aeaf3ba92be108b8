"""Masking credentials in URLs before they are shown anywhere (status, alerts, logs, doctor).

A camera URL such as ``rtsp://user:pass@10.0.0.5/stream`` is configuration, but the station
publishes its camera's name on ``…/status``, in alerts and in logs, places far less guarded than
the config file. Every URL a person or subscriber may see goes through ``mask_url`` first.
"""

from __future__ import annotations

import re

__all__ = ["mask_url"]

# scheme://userinfo@ — userinfo stops at the first '/', '?', '#', whitespace or quote.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'\"]+@")


def mask_url(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it replaced by ``***@``.

    Works on a bare URL and on a message that quotes one (an OpenCV or HTTP error), so a caller
    never has to find the URL first.
    """
    return _USERINFO.sub(r"\1***@", text)
