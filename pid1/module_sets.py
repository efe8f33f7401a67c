"""The kernel modules this system uses, by what they are for: one list that
the boot (pid1.phases.modules loads them) and the image build (image/build.py
puts them and their dependencies, resolved by pid1.kmod, in the initrd) both
import, so the two cannot disagree.
"""

from __future__ import annotations

# Loaded first, by the `engine` phase: the engine's files are on a squashfs
# mounted through a loop device, and containerd starts once it is.
EARLY_MODULES = ("loop", "squashfs")
# Loaded by the `engine` phase too when the engine's image is a file of the
# boot medium (the ISO, pid1.layout.EngineMedium): the CD-ROM behind qemu's
# and VirtualBox's IDE (ata_piix) or SATA (ahci) controller, and ISO 9660.
MEDIUM_MODULES = ("ata_piix", "ahci", "sr_mod", "isofs")
# Loaded with the hardware drivers by the `modules` phase: what the disk scan
# and dockerd's start need first.
STORAGE_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "crc32c_generic", "ext4", "overlay")
# Loaded by `docker_modules` beside dockerd's start: dockerd asks for them
# seconds after its spawn (and were one missing then, the modprobe helper
# would load it).
ENGINE_MODULES = (
    "bridge", "br_netfilter", "veth", "nf_conntrack", "nf_conntrack_netlink", "nf_nat", "xt_MASQUERADE",
    "xt_addrtype", "xt_conntrack", "xt_nat", "xt_tcpudp", "ip_tables", "iptable_filter", "iptable_nat",
    # dockerd opens an XFRM netlink socket at start; without xfrm_user the
    # kernel asks modprobe for an alias (on dockerd's start: docs/benchmarks.md)
    # and dockerd warns that IPsec is off.
    "xfrm_user",
)  # fmt: skip
# The ACPI power button and its input events.
INPUT_MODULES = ("button", "evdev")
# Where in lib/modules/VERSION the drivers that make disks appear live: the
# buses and controllers (virtio, ATA, SCSI, NVMe, Hyper-V's VMBus, USB
# storage and its host controllers, MMC) and the block drivers on them. The
# modules phase loads these first, so the storage phase's wait for a late
# disk counts from them, not from the rest of the hardware's drivers.
DISK_DRIVER_FOLDERS = tuple(
    f"kernel/drivers/{folder}/" for folder in ("virtio", "ata", "scsi", "block", "nvme", "hv", "usb/storage",
                                               "usb/host", "mmc")
)  # fmt: skip

# In the image but loaded on demand: by coldplug (the hardware's modaliases),
# by the kernel's request at mount or socket time, or by iptables and dockerd.
DRIVER_MODULES = (
    "virtio_scsi", "virtio_console", "virtio_rng", "e1000", "e1000e", "ata_piix", "ahci", "sd_mod", "sr_mod",
)  # fmt: skip
# The disks and network cards of the hypervisors the disk image is for
# (docs/image.md, the disk image): NVMe (AWS Nitro, GCE), AWS's ENA,
# Google's gVNIC, Hyper-V's and Azure's VMBus disk, network and keyboard
# (generation 2 has no PS/2), VMware's paravirtual SCSI and vmxnet3.
CLOUD_MODULES = (
    "nvme", "ena", "gve", "hv_storvsc", "hv_netvsc", "hyperv_keyboard", "vmw_pvscsi", "vmxnet3",
)  # fmt: skip
SOCKET_MODULES = ("unix", "af_packet")  # the engine's and the DHCP client's sockets
# User-data volumes: NoCloud cidata and OpenStack config-2, ISO 9660 or vfat
# (vfat's default codepage 437 and iocharset ascii).
VOLUME_MODULES = ("isofs", "vfat", "nls_cp437", "nls_ascii", "nls_utf8")
# What iptables' rules and dockerd's networks use beyond ENGINE_MODULES.
FIREWALL_MODULES = (
    "xt_mark", "xt_comment", "iptable_mangle", "ip6_tables", "ip6table_filter", "ip6table_nat", "ipt_REJECT",
    "nf_reject_ipv4", "xfrm_algo",
)  # fmt: skip
# Docker's Swarm mode (docs/swarm.md): overlay networks are vxlan links; a
# service's virtual IP and the ingress routing mesh are IPVS (dockerd runs
# modprobe ip_vs itself, and its ingress rules match with xt_ipvs); the
# schedulers are IPVS's round robin (dockerd's), weighted and source hash;
# xt_u32 matches the encrypted overlay's ESP packets; xt_REDIRECT takes a
# published port to its task inside the task's network namespace.
SWARM_MODULES = ("vxlan", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "xt_ipvs", "xt_u32", "xt_REDIRECT")

LOADED_AT_BOOT = (*EARLY_MODULES, *STORAGE_MODULES, *ENGINE_MODULES, *INPUT_MODULES)
ON_DEMAND = (
    *DRIVER_MODULES, *CLOUD_MODULES, *SOCKET_MODULES, *VOLUME_MODULES, *FIREWALL_MODULES, *SWARM_MODULES,
)  # fmt: skip
# Everything the initrd carries (with what each needs). xfs and btrfs (more
# initrd to unpack: docs/benchmarks.md, "Image sizes") are left out: the storage phase then
# reports their disks as failing to mount and runs from RAM.
IN_IMAGE = tuple(dict.fromkeys((*LOADED_AT_BOOT, *ON_DEMAND)))
