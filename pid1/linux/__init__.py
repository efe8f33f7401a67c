"""The platform layer: what pid1 asks of Linux, one implementation each.

- `syscalls`: every ctypes call and raw syscall (mount, reboot, signalfd,
  posix_spawn, finit_module, the clock, window-size ioctls, the partition
  and ext4 resize ioctls);
- `mountinfo`: the one parser of /proc/self/mountinfo;
- `uevent`: the one socket of the kernel's device events;
- `terminal`: a terminal opened in raw or view mode, its size, its restore;
- `fifo`: FIFOs pid1 reads (made safely, retired at the stop) and the
  bounded line splitter their readers share;
- `fds`: closing an fd the event loop reads;
- `procfs`: /proc readers (the command line, capabilities, loaded modules).

May use: the standard library only; nothing here imports the rest of pid1.
This package's own import costs nothing: each module is imported by name
(the modprobe front imports only `procfs`).
"""
