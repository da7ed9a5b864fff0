// Package fskind names the file system a path is on. Whether an audit
// directory is on tmpfs decides what a durability measurement means, so
// the audit probe and the bench report both say it.
package fskind

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// Of names the file system holding path: tmpfs, ext4, xfs, btrfs,
// overlayfs, or its magic number.
func Of(path string) string {
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
