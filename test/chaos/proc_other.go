//go:build !linux

package chaos

import "syscall"

// procAttr: outside Linux a process cannot ask to die with its parent.
func procAttr() *syscall.SysProcAttr { return nil }
