package admin

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// openAPIDoc is the part of openapi.json the tests read.
type openAPIDoc struct {
	OpenAPI string                                 `json:"openapi"`
	Paths   map[string]map[string]openAPIOperation `json:"paths"`
}

type openAPIOperation struct {
	Parameters []map[string]any           `json:"parameters"`
	Responses  map[string]json.RawMessage `json:"responses"`
	Request    map[string]any             `json:"requestBody"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var d openAPIDoc
	if err := json.Unmarshal(openAPI, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return d
}

// documentedStatus reports whether openapi.json lists status for the route.
func (d openAPIDoc) documentedStatus(method, pattern string, status string) bool {
	op, ok := d.Paths[pattern][strings.ToLower(method)]
	if !ok {
		return false
	}
	_, ok = op.Responses[status]
	return ok
}

func TestOpenAPIMatchesTheRouter(t *testing.T) {
	d := loadOpenAPI(t)
	if !strings.HasPrefix(d.OpenAPI, "3.1.") {
		t.Errorf("openapi %q, want 3.1.x", d.OpenAPI)
	}
	h := newEnv(t, nil).h
	registered := map[string]bool{}
	for _, rt := range h.routes {
		if rt.isUI() {
			// Pages of the web UI are HTML, not part of the API.
			continue
		}
		registered[rt.key()] = true
	}
	documented := map[string]bool{}
	for path, ops := range d.Paths {
		for m, op := range ops {
			key := strings.ToUpper(m) + " " + path
			documented[key] = true
			if !registered[key] {
				t.Errorf("openapi.json documents %s, which the router does not have", key)
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s documents no response", key)
			}
			// Path parameters: exactly those of the pattern.
			var want, got []string
			for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
				want = append(want, m[1])
			}
			for _, p := range op.Parameters {
				if p["in"] == "path" {
					got = append(got, p["name"].(string))
				}
			}
			sort.Strings(want)
			sort.Strings(got)
			if !slices.Equal(want, got) {
				t.Errorf("%s: path parameters %v, pattern has %v", key, got, want)
			}
		}
	}
	var missing []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		t.Errorf("route %s is not in openapi.json", k)
	}

	// Every $ref resolves.
	var raw any
	if err := json.Unmarshal(openAPI, &raw); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				var cur any = raw
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := cur.(map[string]any)
					cur = m[part]
				}
				if cur == nil {
					t.Errorf("$ref %s does not resolve", ref)
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(raw)
}

func TestOpenAPIIsServed(t *testing.T) {
	e := newEnv(t, nil)
	r := e.client().do("GET", "/api/v1/openapi.json", nil)
	want(t, r, 200, "openapi.json")
	if !bytes.Equal(r.body, openAPI) {
		t.Error("served document differs from the embedded file")
	}
}
