"""The digital twin (`sim://`): a conveyor with procedural cucumbers, an encoder, gates and bins."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlparse

from device.sim.camera import MultiViewCamera, SimCamera
from device.sim.twin import Twin, TwinParams

__all__ = ["MultiViewCamera", "SimCamera", "Twin", "TwinParams", "open_camera", "register_twin"]

_twins: dict[str, Twin] = {}
DEFAULT_GATES_MM = {i: 400.0 + 100.0 * i for i in range(8)}


def _key(uri: str) -> tuple[str, int]:
    """The twin's identity is its URI without `view`; `view` picks the camera."""
    u = urlparse(uri)
    q = [(k, v) for k, v in parse_qsl(u.query) if k != "view"]
    view = int(dict(parse_qsl(u.query)).get("view", 0))
    return f"sim://{u.netloc}{u.path}?{urlencode(sorted(q))}", view


def register_twin(uri: str, twin: Twin) -> None:
    """Make `open_camera(uri)` return cameras on this twin (the daemon does this when it owns the line)."""
    _twins[_key(uri)[0]] = twin


def open_camera(uri: str, view: int | None = None, name: str = "sim") -> SimCamera | MultiViewCamera:
    """A camera on the twin registered for `uri`, or on a new free-running twin (bring-up, benchmarks)."""
    key, uri_view = _key(uri)
    twin = _twins.get(key)
    if twin is None:
        u = urlparse(uri)
        query = urlencode([(k, v) for k, v in parse_qsl(u.query) if k != "view"])
        params = TwinParams.from_uri(u._replace(query=query).geturl())
        twin = Twin(params, DEFAULT_GATES_MM)
        twin.start()
        _twins[key] = twin
    if twin.p.views > 1 and view is None and "view=" not in uri:
        return MultiViewCamera(twin, twin.p.views, name)
    return SimCamera(twin, view if view is not None else uri_view, name)
