package main

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// fsKind names the file system holding path, for the bench report: whether
// an audit directory is on tmpfs decides what a comparison measures.
func fsKind(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	switch uint64(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return "type 0x" + strconv.FormatUint(uint64(st.Type), 16)
}
