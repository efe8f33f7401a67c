"""What the tests, the benchmarks and the image build share, and nothing
the machine runs: pid1 under unshare and bounded waits (harness), a qemu
boot (vm), Debian's kernel tree (kernel_tree), ptys standing in for the
terminals (pty), pid1 with an engine of its own (engine, noop_host_phases),
a veth between two network namespaces (netns), an SNTP server
(sntp_server) and typical states for the view (sample_states).

Installed with the project (`pip install -e .`: tests/run does it), so
everything imports it by name; image/build puts the repository on
PYTHONPATH instead.
"""
