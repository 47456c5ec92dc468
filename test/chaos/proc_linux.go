package chaos

import "syscall"

// procAttr makes a shardd process die with the test process (a test that
// times out or is killed must not leave daemons behind).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
