// Command pgcheck tells whether the test PostgreSQL server
// (QIM_TEST_POSTGRES) is reachable, for make test to say up front that the
// PostgreSQL tests will be skipped. It exits 0 either way unless
// QIM_REQUIRE_POSTGRES=1.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/qim-im/qim/internal/pgtest"
)

func main() {
	if err := pgtest.Check(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "\n*** PostgreSQL at %s is not reachable (%v).\n", pgtest.URL(), err)
		if pgtest.Required() {
			fmt.Fprintln(os.Stderr, "*** QIM_REQUIRE_POSTGRES=1: the PostgreSQL tests cannot be skipped; failing.")
			os.Exit(1)
		}
		fmt.Fprint(os.Stderr, "*** The PostgreSQL tests will be SKIPPED. Set QIM_TEST_POSTGRES to run them.\n\n")
		return
	}
	fmt.Printf("PostgreSQL tests run against %s\n", pgtest.URL())
}
