package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

// apiClient is the CLI's client of a running server's REST API.
type apiClient struct {
	server string
	token  string
	http   *http.Client
}

// addClientFlags adds --server and --token to a command that talks to the API.
func addClientFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("server", envOr("PHOENIX_SERVER", "http://127.0.0.1"), "phoenix server URL (env PHOENIX_SERVER)")
	cmd.PersistentFlags().String("token", "", "API token for changes (env PHOENIX_TOKEN; default: read from --state DIR if given)")
}

// newClient builds a client from --server/--token (and PHOENIX_TOKEN, or the
// token file of --state when the CLI runs on the server itself).
func newClient(cmd *cobra.Command) *apiClient {
	server, _ := cmd.Flags().GetString("server")
	token, _ := cmd.Flags().GetString("token")
	if token == "" {
		token = os.Getenv("PHOENIX_TOKEN")
	}
	if token == "" {
		if f := cmd.Flags().Lookup("state"); f != nil && f.Value.String() != "" {
			if b, err := os.ReadFile(filepath.Join(f.Value.String(), fleet.TokenFile)); err == nil {
				token = strings.TrimSpace(string(b))
			}
		}
	}
	// No overall timeout: imports and --wait can take long; callers use ctx.
	return &apiClient{server: strings.TrimRight(server, "/"), token: token, http: &http.Client{}}
}

// do sends a request with an optional body and decodes a JSON answer into
// out (if non-nil). Non-2xx answers become errors carrying the server's
// own message.
func (c *apiClient) do(cmd *cobra.Command, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(cmd.Context(), method, c.server+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("server %s: %s %s: %s", c.server, method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// getJSON fetches path into out.
func (c *apiClient) getJSON(cmd *cobra.Command, path string, out any) error {
	return c.do(cmd, http.MethodGet, path, nil, "", out)
}

// sendJSON sends in as JSON with method and decodes the answer into out.
func (c *apiClient) sendJSON(cmd *cobra.Command, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.do(cmd, method, path, body, "application/json", out)
}
