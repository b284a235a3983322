package testserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Binary is a command of this module built once for the tests of one test
// process, for tests that run it as a process of its own. The zero value
// with Pkg set is ready to use; the package's TestMain calls Remove.
type Binary struct {
	// Pkg is the command's import path, e.g. "github.com/qim-im/qim/cmd/qimd".
	Pkg string
	// Race builds it with the race detector.
	Race bool

	once sync.Once
	dir  string // set by the build, read by Remove
	path string
	err  error
}

// Path returns the built command, building it on the first call; other
// calls wait for that build. A failed build fails t.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "qim-build-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, filepath.Base(b.Pkg))
		args := []string{"build", "-o", b.path}
		if b.Race {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, b.Pkg)...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("testserver: go build %s: %v\n%s", b.Pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Remove deletes what Path built, if anything. TestMain calls it after the
// tests have run.
func (b *Binary) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
