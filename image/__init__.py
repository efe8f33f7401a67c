"""The image build: dist/ (kernel, initrd, the boot media) from Debian
packages and PyPI wheels (build), the ISO and the disk image (boot_media;
gpt reads a disk's table, esp edits and upgrades a disk image's ESP), the
bundled images without a daemon (bundled_images), the same images as a
docker data root (docker_seed), the initrd's Python (python_runtime), and
the cpio and ELF readers and writers they use.

A package run from the repository: `image/build` runs `python3 -m
image.build` with the repository on PYTHONPATH (it imports pid1's module
lists and devtools' kernel tree); the tests import it as `image.NAME`.
"""
