"""device.service.notify against a real AF_UNIX datagram socket (path and abstract namespace)."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from sd_listener import NotifyListener

from device.service.notify import Notifier


def test_messages_arrive_as_systemd_reads_them(notify_listener: NotifyListener) -> None:
    n = Notifier(notify_listener.address)
    assert n.enabled
    assert n.ready("camera, model and MCU up")
    assert n.status("sorting\n42 items")  # a newline must not start a bogus field
    assert n.extend_timeout(90)
    assert n.watchdog()
    assert n.stopping("stopping (SIGTERM)")
    n.close()

    notify_listener.wait_for(lambda m: "STOPPING=1" in m, timeout=5)
    got = [m.fields for m in notify_listener.messages]
    assert got == [
        {"READY": "1", "STATUS": "camera, model and MCU up"},
        {"STATUS": "sorting 42 items"},
        {"EXTEND_TIMEOUT_USEC": "90000000"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping (SIGTERM)"},
    ]
    assert {m.pid for m in notify_listener.messages} == {os.getpid()}  # NotifyAccess=main would accept them
    assert n.sent == 5


def test_abstract_namespace(abstract_listener: NotifyListener) -> None:
    n = Notifier(abstract_listener.address)
    assert n.ready()
    _, msg = abstract_listener.wait_for(lambda m: "READY=1" in m, timeout=5)
    assert msg.fields == {"READY": "1"}


def test_stopping_is_sent_once(notify_listener: NotifyListener) -> None:
    n = Notifier(notify_listener.address)
    n.stopping()
    n.stopping("MCU safe")  # a later call only updates the status line
    notify_listener.wait_for(lambda m: "STATUS" in m.fields, timeout=5)
    assert [m.fields for m in notify_listener.messages] == [{"STOPPING": "1"}, {"STATUS": "MCU safe"}]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    env: dict[str, str] = {}
    n = Notifier.from_env(env)
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert n.watchdog_period() is None
    with n.extending("building"):
        pass
    assert n.sent == 0


def test_from_env_reads_and_unsets(notify_listener: NotifyListener) -> None:
    env = {
        "NOTIFY_SOCKET": notify_listener.address,
        "WATCHDOG_USEC": "3000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    n = Notifier.from_env(env)
    assert n.enabled and n.watchdog_period() == 3.0
    assert env == {}  # children must not inherit them
    kept = {"NOTIFY_SOCKET": notify_listener.address}
    Notifier.from_env(kept, unset=False)
    assert kept == {"NOTIFY_SOCKET": notify_listener.address}


@pytest.mark.parametrize(
    ("env", "period"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "x"}, None),
        ({}, None),
    ],
)
def test_watchdog_period(env: dict[str, str], period: float | None) -> None:
    assert Notifier.from_env(dict(env)).watchdog_period() == period


def test_unsupported_address_disables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgesort.service"):
        n = Notifier("vsock:2:1234")
    assert not n.enabled and not n.ready()
    assert "not a unix socket address" in caplog.text


def test_gone_manager_is_logged_once_and_never_raises(
    notify_listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    address = notify_listener.address
    n = Notifier(address)
    assert n.watchdog()
    notify_listener.close()
    if not address.startswith("@"):
        os.unlink(address)
    with caplog.at_level(logging.WARNING, logger="edgesort.service"):
        assert not n.watchdog()
        assert not n.watchdog()
    assert caplog.text.count("cannot notify the service manager") == 1


def test_extending_repeats_until_the_step_ends(notify_listener: NotifyListener) -> None:
    n = Notifier(notify_listener.address)
    with n.extending("building TensorRT engine", step_s=0.2, limit_s=60):
        i, _ = notify_listener.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m.fields, timeout=10)
        notify_listener.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m.fields, timeout=10, after=i + 1)
    count = len(notify_listener.messages)
    n.ready()
    _, ready = notify_listener.wait_for(lambda m: "READY=1" in m, timeout=5, after=count)
    extends = [m for m in notify_listener.messages if "EXTEND_TIMEOUT_USEC" in m.fields]
    assert all(m.fields["EXTEND_TIMEOUT_USEC"] == "200000" for m in extends)
    assert all(m.ts < ready.ts for m in extends)  # none after the step ended
    statuses = [m.fields["STATUS"] for m in notify_listener.messages if "STATUS" in m.fields]
    assert statuses and all(s.startswith("building TensorRT engine (") for s in statuses)


def test_extending_gives_up_at_the_limit(
    notify_listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(notify_listener.address)
    with caplog.at_level(logging.WARNING, logger="edgesort.service"), n.extending("building", limit_s=0.0):
        pass
    assert "no longer extending the start timeout" in caplog.text
    assert not [m for m in notify_listener.messages if "EXTEND_TIMEOUT_USEC" in m.fields]


def test_send_does_not_hang_when_the_queue_is_full(tmp_path: os.PathLike[str]) -> None:
    """A receiver that never reads: sends give up after SEND_TIMEOUT_S instead of freezing the main loop."""
    path = os.path.join(tmp_path, "full.sock")
    if len(path) >= 100:
        pytest.skip("tmp path too long for a unix socket")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    try:
        n = Notifier(path)
        results = [n.watchdog() for _ in range(12)]  # net.unix.max_dgram_qlen is 10 by default
        assert results[0] and not all(results)
    finally:
        sink.close()


def test_a_signal_handler_may_notify_while_the_main_thread_is_inside_notify(
    notify_listener: NotifyListener,
) -> None:
    """SIGTERM/SIGUSR2 handlers run in the main thread between two bytecodes, possibly inside notify()."""
    import threading

    n = Notifier(notify_listener.address)
    done = threading.Event()

    def interrupted_main_thread() -> None:
        with n._lock:  # where the main thread was when the signal arrived
            n.status("from the signal handler")
        done.set()

    t = threading.Thread(target=interrupted_main_thread, daemon=True)
    t.start()
    assert done.wait(10), "notify() deadlocked on its own lock"
    notify_listener.wait_for(lambda m: "STATUS" in m.fields, timeout=5)
