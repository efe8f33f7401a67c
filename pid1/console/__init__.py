"""The console: the VM's terminals (serial, VT1) bridged to the console
container's TTY.

- `terminal`: one console terminal (raw mode, its output queue with bounded
  backpressure, stalled and dead terminals);
- `bridge`: ConsoleBridge, the terminals <-> whichever console container
  runs (attach streams, reattaching, the waiting line, announcements).

The console_tty phase opens the terminals and publishes the bridge; the
console phase puts it in the console's ContainerSpec; the system-container
supervisor attaches each console container to it.
"""
