package main

import (
	"io/fs"
	"net/http"

	"github.com/phoenixboot/phoenix/assets"
)

// uiHandler serves the embedded dashboard: index.html at "/", its script
// and style under /ui/. The page only reads the open part of /api/v1.
//
// The Content-Security-Policy allows scripts, styles and requests from this
// server only, and no framing: even a host name or BMC error that slipped
// past the page's text-only rendering could not run or load anything.
func uiHandler() http.Handler {
	web, err := fs.Sub(assets.Web, "web")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	files := http.FileServerFS(web)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		mux.ServeHTTP(w, r)
	})
}
