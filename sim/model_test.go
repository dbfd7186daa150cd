package sim

import (
	"context"
	"encoding/json"
	"testing"
)

func TestQuick(t *testing.T) {
	sc := DefaultScenario()
	rep, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep.Figures.Curve = nil
	b, _ := json.MarshalIndent(rep, "", " ")
	t.Log(string(b))
}
