"""The engine: containerd, dockerd and the system containers, as pid1 runs
and keeps them. The phases that start it are pid1/phases/dockerd.py.

- status.py: DaemonStatus and ContainerStatus, the statuses state.json shows.
- daemon.py: a supervised daemon (spawn, readiness, restart, stop);
  log_pump.py: its output, to its log file and (rate-limited) pid1's log.
- containerd.py: containerd's config and argv; dockerd_args.py: dockerd's
  argv, storage driver, DOCKER_RAMDISK, the TCP API's TLS arguments.
- client.py: the Docker API, the only module of pid1 that imports aiodocker.
- system_containers.py: the supervisor of the system containers, driven by
  events; keeper.py: one role's state machine and crash-loop accounting;
  starter.py: making and starting a role's container;
  container_config.py: the create payload and the names.
- stop.py: the engine's orderly stop (containers, dockerd, containerd).

Importing this package costs nothing: each module is imported where used.
"""
