package admin

import (
	_ "embed"
	"net/http"
)

// openAPI documents every /api/v1/ route (OpenAPI 3.1). A test fails when
// it and the route table disagree.
//
//go:embed openapi.json
var openAPI []byte

func (h *Handler) apiOpenAPI(w http.ResponseWriter, _ *http.Request, _ *principal) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, err := w.Write(openAPI)
	return err
}
