package badger

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/univrs/peerstate/datastore"
)

// checkDir looks at a Badger directory before Badger opens it. Badger
// starts a fresh database when its MANIFEST is missing, so a directory
// whose MANIFEST was lost would open empty beside its own data files;
// that is refused, as is a MANIFEST emptied or cut shorter than its header.
func checkDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read dir: %w", err)
	}
	var data []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".sst", ".vlog", ".mem":
			data = append(data, e.Name())
		}
	}
	st, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(data) > 0:
		return fmt.Errorf("%w: MANIFEST missing beside %d data files (%s)", datastore.ErrCorrupt, len(data), strings.Join(data[:min(3, len(data))], ", "))
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("stat MANIFEST: %w", err)
	case st.Size() < 8: // magic and version
		return fmt.Errorf("%w: MANIFEST is %d bytes, shorter than its header", datastore.ErrCorrupt, st.Size())
	}
	return nil
}
