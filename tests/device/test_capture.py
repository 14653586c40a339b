import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_fixtures import colour_images

from device.capture import CaptureError, CaptureThread, EndOfStreamError, open_source
from device.capture.files import FolderSource, VideoFileSource
from device.frames import Frame


def write_video(path: Path, n: int = 12, size=(64, 48)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    assert w.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, : (i + 1) * size[0] // n] = 255  # a bar that grows frame by frame
        w.write(img)
    w.release()
    return path


def drain(src, limit=1000) -> list[Frame]:
    out = []
    with pytest.raises(EndOfStreamError):
        for _ in range(limit):
            f = src.read(1.0)
            if f is not None:
                out.append(f)
    return out


def test_folder_in_name_order_skipping_unreadable_files(tmp_path):
    paths = colour_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "0002b.png").write_bytes(b"not a png")
    src = open_source(f"file://{tmp_path / 'imgs'}?fps=0", name="c1")
    assert isinstance(src, FolderSource)
    src.open()
    frames = drain(src)
    assert [f.meta["file"] for f in frames] == [p.name for p in paths]
    assert [f.seq for f in frames] == [1, 2, 3, 4] and frames[0].source == "c1"
    assert src.skipped == 1
    src.close()


def test_folder_loops_and_a_folder_without_images_is_an_error(tmp_path):
    colour_images(tmp_path / "imgs", 2)
    src = open_source(str(tmp_path / "imgs") + "?loop=1&fps=0")
    src.open()
    assert [src.read(1.0).meta["file"] for _ in range(5)] == ["0000.png", "0001.png"] * 2 + ["0000.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptureError, match="no images"):
        open_source(str(tmp_path / "empty")).open()


def test_video_file_all_frames_then_end(tmp_path):
    path = write_video(tmp_path / "v.avi")
    src = open_source(f"file://{path}?fps=0")
    assert isinstance(src, VideoFileSource)
    src.open()
    frames = drain(src)
    assert len(frames) == 12 and frames[0].image.shape == (48, 64, 3)
    assert frames[-1].image.mean() > frames[0].image.mean()  # the bar grew: frames come in order
    src.close()


@pytest.mark.timeout(60)
def test_corrupt_and_truncated_videos_give_a_clear_error_never_a_hang(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    src = open_source(str(junk))
    with pytest.raises(CaptureError, match=r"junk\.mp4"):
        src.open()
        src.read(1.0)
    good = write_video(tmp_path / "good.avi", n=30).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good[: len(good) // 2])
    src = open_source(f"{cut}?fps=0")
    try:
        src.open()
        frames = drain(src)
        assert 0 < len(frames) < 30
    except CaptureError as exc:  # FFmpeg may refuse a file whose index is gone: also a clear error
        assert "cut.avi" in str(exc)


def test_uri_errors_are_one_sentence(tmp_path):
    with pytest.raises(CaptureError, match="unknown camera URI scheme 'gopher'"):
        open_source("gopher://x")
    with pytest.raises(CaptureError, match="no such file or folder"):
        open_source(f"file://{tmp_path}/nothing.mp4")
    with pytest.raises(CaptureError, match="is not a number"):
        open_source(f"{tmp_path}?fps=fast")


def test_pacing_releases_frames_at_the_asked_rate(tmp_path):
    colour_images(tmp_path / "imgs", 3)
    src = open_source(str(tmp_path / "imgs"), fps=20.0)
    src.open()
    assert src.read(1.0) is not None
    assert src.read(0.0) is None  # the next frame is due in 50 ms, later than a zero timeout


class Starving:
    """A real capture source over a folder that stops delivering after `stop_after` frames (a stalled camera:
    read() times out), until reopened. Counts its opens."""

    name = "starving"

    def __init__(self, folder: Path, stop_after: int):
        self.inner = FolderSource(folder, name=self.name, loop=True)
        self.stop_after = stop_after
        self.opens = 0
        self.delivered = 0

    def open(self):
        self.opens += 1
        self.delivered = 0
        self.inner.open()

    def read(self, timeout):
        if self.delivered >= self.stop_after:
            time.sleep(timeout)
            return None
        self.delivered += 1
        return self.inner.read(timeout)

    def close(self):
        self.inner.close()


@pytest.mark.timeout(30)
def test_a_stalled_source_is_reported_and_reopened(tmp_path):
    colour_images(tmp_path / "imgs", 3)
    src = Starving(tmp_path / "imgs", stop_after=3)
    with CaptureThread(src, stall_timeout_s=0.3, backoff_first_s=0.05) as cap:
        got = 0
        deadline = time.monotonic() + 10
        while got < 8 and time.monotonic() < deadline:
            got += cap.get(0.5) is not None
        st = cap.stats()
    assert got >= 8
    assert st["stalls"] >= 2 and st["reopens"] >= 2 and src.opens >= 3


@pytest.mark.timeout(30)
def test_a_vanished_folder_is_retried_with_back_off_and_recovers(tmp_path):
    folder = tmp_path / "imgs"
    colour_images(folder, 3)
    src = FolderSource(folder, loop=True, fps=50.0)
    with CaptureThread(src, stall_timeout_s=0.5, backoff_first_s=0.05, backoff_max_s=0.2) as cap:
        assert cap.get(2.0) is not None
        shutil.rmtree(folder)
        deadline = time.monotonic() + 5
        while cap.stats()["state"] != "reopening" and time.monotonic() < deadline:
            cap.get(0.1)
        assert cap.stats()["state"] == "reopening"
        colour_images(folder, 3)
        # wait on the counters, not on a frame: one read before the folder went can still sit in the slot
        # (a starved test thread may see "reopening" before it took that frame)
        deadline = time.monotonic() + 5
        while cap.stats()["reopens"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        frames = cap.stats()["frames"]
        while cap.stats()["frames"] == frames and time.monotonic() < deadline:
            cap.get(0.2)
        st = cap.stats()
    assert st["reopens"] >= 1 and st["state"] == "running" and st["frames"] > frames
    assert cap.stats()["state"] == "closed"


def test_latest_frame_wins_and_drops_are_counted(tmp_path):
    colour_images(tmp_path / "imgs", 20)
    with CaptureThread(open_source(f"{tmp_path / 'imgs'}?fps=0")) as cap:
        deadline = time.monotonic() + 10
        while not cap.ended and time.monotonic() < deadline:
            time.sleep(0.02)  # a consumer that never takes: every frame but the last is replaced
        last = cap.get(0.1)
        st = cap.stats()
    assert cap.ended and last is not None and last.meta["file"] == "0019.png"
    assert st["frames"] == 20 and st["dropped"] == 19
    assert cap.get(0.05) is None and cap.finished


def test_views_of_one_exposure_are_kept_together():
    class TwoViews:
        name = "mv"

        def __init__(self):
            self.i = 0

        def open(self):
            pass

        def read(self, timeout):
            if self.i >= 6:
                raise EndOfStreamError("done")
            exposure, view = divmod(self.i, 2)
            self.i += 1
            return Frame(np.zeros((2, 2, 3), np.uint8), float(exposure), exposure, self.name, view)

        def close(self):
            pass

    with CaptureThread(TwoViews()) as cap:
        deadline = time.monotonic() + 5
        while not cap.ended and time.monotonic() < deadline:
            time.sleep(0.01)
        got = [cap.get(0.1) for _ in range(3)]
        assert [(f.seq, f.view) for f in got if f] == [(2, 0), (2, 1)]
        assert cap.stats()["dropped"] == 4


class MjpegServer:
    """A real HTTP MJPEG camera (multipart/x-mixed-replace, as IP cameras serve it) on localhost.

    `pause` keeps the connection open but sends nothing (a hung camera); `stop` closes the port."""

    def __init__(self, port: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not outer.halted:
                        if outer.paused:
                            time.sleep(0.05)
                            continue
                        img = np.full((48, 64, 3), i % 250, np.uint8)
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                        self.wfile.write(head + jpg + b"\r\n")
                        i += 1
                        time.sleep(0.02)  # 50 fps
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.halted = False
        self.paused = False
        self.srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def stop(self):
        self.halted = True
        self.srv.shutdown()
        self.srv.server_close()


def wait_for(cap, cond, seconds):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        cap.get(0.1)
    return cond()


@pytest.mark.timeout(60)
def test_a_network_camera_that_vanishes_is_reopened_when_it_comes_back():
    server = MjpegServer()
    src = open_source(server.uri, name="ipcam")
    with CaptureThread(src, stall_timeout_s=1.0, backoff_first_s=0.1, backoff_max_s=0.4) as cap:
        assert cap.get(5.0) is not None
        server.stop()
        assert wait_for(cap, lambda: cap.stats()["state"] == "reopening", 10)
        server = MjpegServer(server.port)  # the camera is back on the same address
        try:
            assert wait_for(
                cap, lambda: cap.stats()["reopens"] >= 1 and cap.stats()["state"] == "running", 15
            )
            assert cap.get(5.0) is not None
        finally:
            server.stop()


@pytest.mark.timeout(60)
def test_a_hung_network_camera_times_out_instead_of_blocking_forever():
    server = MjpegServer()
    src = open_source(server.uri)
    try:
        src.open()
        assert src.read(1.0) is not None
        server.paused = True
        t0 = time.monotonic()
        with pytest.raises(CaptureError, match="no frame"):
            for _ in range(1000):
                src.read(1.0)
        assert time.monotonic() - t0 < 30  # bounded by the FFmpeg read timeout, not forever
    finally:
        src.close()
        server.stop()


def test_unreachable_stream_and_missing_camera_are_clear_errors():
    with pytest.raises(CaptureError, match="cannot open the stream"):
        open_source("rtsp://user:secret@127.0.0.1:1/live").open()
    try:
        open_source("rtsp://user:secret@127.0.0.1:1/live").open()
    except CaptureError as exc:
        assert "secret" not in str(exc)
    with pytest.raises(CaptureError, match="no such device"):
        open_source("v4l2:///dev/video99").open()


def test_csi_builds_the_argus_pipeline_and_says_when_opencv_lacks_gstreamer():
    from device.capture.cameras import CsiSource, argus_pipeline

    src = open_source("csi://1?flip=2", width=1920, height=1080, fps=29.97)
    assert isinstance(src, CsiSource)
    assert src.pipeline == argus_pipeline(1, 1920, 1080, 29.97, 2)
    assert src.pipeline.startswith(
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=(int)1920, "
    )
    assert "framerate=(fraction)30000/1001" in src.pipeline and "nvvidconv flip-method=2" in src.pipeline
    assert src.pipeline.endswith("format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")
    if "GStreamer:                   YES" not in cv2.getBuildInformation():
        with pytest.raises(CaptureError, match="no GStreamer support"):
            src.open()
    with pytest.raises(CaptureError, match="flip must be"):
        open_source("csi://0?flip=9")
