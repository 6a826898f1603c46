package fleet

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPlanAndApply(t *testing.T) {
	store, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := newSimImages("demo:1", "demo:2")
	src.promote("demo@stable", "demo:1")
	c := &Controller{Store: store, Images: src}
	const base = `policy: {canary: 1, max_unavailable: 2}
hosts:
- {name: a, macs: ["52:54:00:00:00:01"], image: demo@stable}
- {name: b, macs: ["52:54:00:00:00:02"], image: demo@stable, labels: {rack: r1}}
- {name: c, macs: ["52:54:00:00:00:03"], image: demo:1}
`
	if _, err := c.Apply([]byte(base), "first"); err != nil {
		t.Fatal(err)
	}
	// Pretend every host was brought to its image.
	c.mu.Lock()
	for _, h := range c.hosts {
		h.Assigned, h.AssignedRef = simDigest("demo:1"), "demo:1"
	}
	c.mu.Unlock()

	tests := []struct {
		name, file    string
		wantErr       string
		added         []string
		removed       []string
		changed       []PlanChange
		reimage       map[string]string // host → reason
		unchanged     bool
		policyChanged []string
	}{
		{name: "same file", file: base, unchanged: true},
		{name: "pin, relabel, add, remove", file: `policy: {canary: 1, max_unavailable: 2}
hosts:
- {name: a, macs: ["52:54:00:00:00:01"], image: demo:2}
- {name: b, macs: ["52:54:00:00:00:02"], image: demo@stable, labels: {rack: r2}}
- {name: d, macs: ["52:54:00:00:00:04"], image: demo@stable}
`, added: []string{"d"}, removed: []string{"c"},
			changed: []PlanChange{{Name: "a", Fields: []string{"image"}}, {Name: "b", Fields: []string{"labels"}}},
			reimage: map[string]string{"a": "image demo:1 → demo:2", "d": "new host"}},
		{name: "mode and policy", file: `policy: {canary: 0, max_unavailable: 3}
hosts:
- {name: a, macs: ["52:54:00:00:00:01"], image: demo@stable, mode: disk}
- {name: b, macs: ["52:54:00:00:00:02"], image: demo@stable, labels: {rack: r1}}
- {name: c, macs: ["52:54:00:00:00:03"], image: demo:1}
`, changed: []PlanChange{{Name: "a", Fields: []string{"mode"}}}, reimage: map[string]string{"a": "mode memory → disk"},
			policyChanged: []string{"canary", "batch", "max_unavailable"}},
		{name: "refused as a whole", file: `policy: {batch: 4, max_unavailable: 2}
hosts:
- {name: a, macs: ["52:54:00:00:00:01"], image: demo@beta}
- {name: a, macs: ["52:54:00:00:00:01"], image: demo:1}
`, wantErr: "line 1: policy: batch 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, err := c.Plan([]byte(tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				for _, w := range []string{"duplicate name", "mac 52:54:00:00:00:01 already belongs"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q", w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pl.Unchanged != tt.unchanged || pl.Revision != 1 {
				t.Errorf("unchanged %v revision %d", pl.Unchanged, pl.Revision)
			}
			norm := func(s []string) []string {
				if len(s) == 0 {
					return nil
				}
				return s
			}
			if !reflect.DeepEqual(norm(pl.Added), tt.added) || !reflect.DeepEqual(norm(pl.Removed), tt.removed) {
				t.Errorf("added %v removed %v", pl.Added, pl.Removed)
			}
			if len(pl.Changed) != len(tt.changed) || (len(tt.changed) > 0 && !reflect.DeepEqual(pl.Changed, tt.changed)) {
				t.Errorf("changed %+v, want %+v", pl.Changed, tt.changed)
			}
			got := map[string]string{}
			for _, r := range pl.Reimage {
				got[r.Name] = r.Reason
			}
			if len(got) != len(tt.reimage) || (len(got) > 0 && !reflect.DeepEqual(got, tt.reimage)) {
				t.Errorf("reimage %v, want %v", got, tt.reimage)
			}
			if !reflect.DeepEqual(pl.PolicyChanged, tt.policyChanged) {
				t.Errorf("policy changed %v, want %v", pl.PolicyChanged, tt.policyChanged)
			}
		})
	}
	// Planning changed nothing.
	if revs, _ := store.Revisions(); len(revs) != 1 {
		t.Fatalf("plan wrote revisions: %+v", revs)
	}
	// Apply a change, then go back to revision 1 as revision 3.
	if res, err := c.Apply([]byte(tests[1].file), ""); err != nil || res.Revision != 2 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if !c.HasHost("d") || c.HasHost("c") {
		t.Error("hosts not applied")
	}
	res, err := c.ApplyRevision(1)
	if err != nil || res.Revision != 3 || !reflect.DeepEqual(res.Plan.Added, []string{"c"}) {
		t.Fatalf("apply revision 1: %+v %v", res, err)
	}
	if n, _ := store.CurrentRevision(); n != 3 {
		t.Errorf("current revision %d", n)
	}
	if _, err := c.ApplyRevision(9); !errors.Is(err, ErrNotFound) {
		t.Errorf("apply of a missing revision: %v", err)
	}
	// A new controller on the same store knows all of it.
	c2 := &Controller{Store: store, Images: src}
	if err := c2.Load(); err != nil {
		t.Fatal(err)
	}
	if !c2.HasHost("c") || c2.HasHost("d") || c2.revision != 3 || c2.maxRevision != 3 || c2.policy.MaxUnavailable != 2 {
		t.Errorf("reloaded: rev %d max %d policy %+v", c2.revision, c2.maxRevision, c2.policy)
	}
}
