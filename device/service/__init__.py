"""Running the daemon as a systemd service: sd_notify, the progress watchdog, signals, exit codes, install.

How `edgesort run` uses these modules is in docs/SERVICE.md (section "For the daemon loop").
"""

from device.service.notify import Notifier
from device.service.signals import ExitCode, ServiceSignals, exit_code_for
from device.service.watchdog import ProgressWatchdog

# The status line the daemon sends once the MCU acknowledged the safe state on the way out (tests wait for
# it).
STATUS_MCU_SAFE = "MCU in safe state: queue flushed, gates de-energised"

__all__ = ["STATUS_MCU_SAFE", "ExitCode", "Notifier", "ProgressWatchdog", "ServiceSignals", "exit_code_for"]
