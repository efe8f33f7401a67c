"""Facts about this system's root filesystem that the image build and the
boot must agree on, in one place both import.
"""

from __future__ import annotations

# The kernel gives init no PATH: /init sets this one for pid1, which every
# daemon it starts inherits; the bundled images' config carries it too.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
