"""The machine's network, below the network phase.

- `mode`: the value of `pid1.net` (dhcp, none, static:...), its one parser;
- `netlink`: the short-lived child `python -m pid1.net.netlink` (pyroute2:
  links up, a static address, the wait for an address and a default route);
- `worker`: that child as the phase sees it (its argv, its JSON events);
- `dhcp`: the dhcp container (its spec, the udhcpc script `udhcpc.script`),
  the lease file it writes, /etc/resolv.conf.

The network phase (pid1/phases/network.py) puts them together; the ntp
phase reads the lease's servers through `dhcp`.
"""
