# Sourced by tests/run and image/: unpacks Debian 12's kernel package (not
# installed: apt-get download + dpkg-deb -x) into a cache and prints the root
# that holds lib/modules/<version>.
KERNEL_CACHE=${KERNEL_CACHE:-/var/cache/only-docker/kernel}

ensure_kernel_tree() {
    local root=$KERNEL_CACHE/root
    if ! ls -d "$root"/lib/modules/*/modules.dep >/dev/null 2>&1; then
        mkdir -p "$KERNEL_CACHE/debs" "$root"
        (
            cd "$KERNEL_CACHE/debs"
            apt-get update -q >&2
            # the metapackage names the current versioned image package
            local pkg
            pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
            [ -n "$pkg" ] || { echo "kernel-tree: cannot resolve linux-image-amd64" >&2; exit 1; }
            ls "$pkg"_*.deb >/dev/null 2>&1 || apt-get download "$pkg" >&2
            dpkg-deb -x "$pkg"_*.deb "$root"
            # the package ships no modules.dep/alias: depmod makes them, as at install
            local version
            version=$(ls "$root/lib/modules" | head -1)
            depmod -b "$root" "$version"
        ) || return 1
    fi
    echo "$root"
}
